"""The service under failures of its own and of qBittorrent's login."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live


def test_a_thread_that_dies_takes_the_service_down_with_exit_1(
    qbittorrent, make_config, start_service, broker, names, events, mocker
):
    service = start_service(make_config(qbittorrent, polling={"interval_seconds": 0.25}))
    infohash = random_hash()
    broker.publish(
        names.command_exchange,
        "downloads.add",
        json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode(),
    )
    events.wait_for("downloads.progress", hash=infohash)

    # A failure no real server produces on demand: the state file write breaks (disk gone).
    mocker.patch.object(service.service.registry, "record", side_effect=OSError("disk I/O error"))

    wait_until(lambda: not service.service.poller.is_alive(), 10, "the poller to die")
    assert service.stop() == 1
    assert isinstance(service.service.poller.failure, OSError)
    assert not service.service.consumer.is_alive() and not service.service.publisher.is_alive()


def test_a_wrong_password_never_gets_the_service_banned(qbit_factory, make_config, start_service):
    qbit = qbit_factory("ban-budget", max_failed_logins=5)  # qBittorrent's real default
    start_service(
        make_config(
            qbit,
            qbittorrent={"password": "not-the-password"},
            polling={"interval_seconds": 0.25, "failure_alert_threshold": 2},
        )
    )
    time.sleep(5)  # 20 poll cycles, each of which would log in again without the gate

    failures = qbit.app_log.count("WebAPI login failure")
    assert failures == 1, qbit.app_log[-2000:]
    assert "banned" not in qbit.app_log.lower()
    assert qbit.client().app_version().startswith("v")  # the right password still works
