"""The service under failures of its own and of qBittorrent's login."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.faults import HttpFaultProxy
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


@pytest.mark.compat
def test_a_wrong_password_never_gets_the_service_banned(qbit_factory, make_config, start_service):
    qbit = qbit_factory("ban-budget", max_failed_logins=5)  # qBittorrent's real default
    running = start_service(
        make_config(
            qbit,
            qbittorrent={"password": "not-the-password"},
            polling={"interval_seconds": 0.25, "failure_alert_threshold": 2},
        )
    )
    rounds = running.service.poller.rounds
    time.sleep(5)  # 20 poll cycles, each of which would log in again without the gate
    assert running.service.poller.rounds - rounds >= 15  # it did go on polling

    failures = qbit.app_log.count("WebAPI login failure")
    assert failures == 1, qbit.app_log[-2000:]
    assert "banned" not in qbit.app_log.lower()
    assert qbit.client().app_version().startswith("v")  # the right password still works


def test_a_wrong_password_in_the_url_never_gets_the_service_banned_by_qbittorrent_5_2(
    qbit_factory, make_config, start_service, events
):
    """From 5.2 qBittorrent checks the URL's userinfo (sent as HTTP Basic auth) on every
    request and counts each refusal as a failed login: polled every cycle, it banned us in
    seconds."""
    qbit = qbit_factory("basic-auth", max_failed_logins=5)  # qBittorrent's real default
    if qbit.version_info < (5, 2):
        pytest.skip(f"qBittorrent {qbit.version} ignores the userinfo of its URL")
    proxy = HttpFaultProxy(qbit.url)
    try:
        url = proxy.url.replace("http://", "http://admin:not-the-password@")
        running = start_service(
            make_config(
                qbit,
                qbittorrent={"url": url},
                polling={"interval_seconds": 0.25, "failure_alert_threshold": 2},
            )
        )
        [failed] = events.wait_for("downloads.polling_failed", timeout=15)
        assert "401 Unauthorized" in failed["error"] and "[qbittorrent] url" in failed["error"]
        rounds = running.service.poller.rounds
        time.sleep(4)  # 16 poll cycles
        assert running.service.poller.rounds - rounds >= 12  # it did go on polling
    finally:
        proxy.close()
    assert [status for _, status, _ in proxy.answers] == [401]
    assert "banned" not in qbit.app_log.lower()
    assert qbit.client().app_version().startswith("v")  # the IP is still welcome
