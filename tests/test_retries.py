"""Transient failures go through the retry queue, never in a hot loop, and end in the DLQ
only after max_attempts."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live


def test_commands_wait_in_the_queue_while_qbittorrent_is_down_and_are_added_once_it_is_back(
    qbit_factory, make_config, start_service, broker, names, events
):
    qbit = qbit_factory()
    running = start_service(make_config(qbit, polling={"interval_seconds": 0.25}))
    qbit.stop()
    wait_until(lambda: not running.service.poller.qbit.up, 10, "polls to fail")
    infohash = random_hash()
    broker.publish(
        names.command_exchange,
        "downloads.add",
        json.dumps({"magnet": magnet_for(infohash), "category": "tv", "request_id": "r"}).encode(),
    )

    time.sleep(2.0)
    assert broker.message_count(names.command_queue) == 1  # waiting, not taken
    assert broker.message_count(names.retry_queue) == 0  # no attempt spent on an outage
    assert events.of("downloads.received") == []
    qbit.start()

    added = events.wait_for("downloads.added", hash=infohash, timeout=30)[0]
    assert added["duplicate"] is False and added["request_id"] == "r"
    assert qbit.client().torrents_info(torrent_hashes=infohash)
    assert broker.get_all(names.dead_letter_queue) == []


def test_an_add_that_fails_transiently_is_retried_and_added_when_it_works(
    qbittorrent, make_config, start_service, broker, names, events
):
    proxy = HttpFaultProxy(qbittorrent.url)
    proxy.fail_paths["/api/v2/torrents/add"] = 503
    try:
        start_service(
            make_config(
                None,
                qbittorrent={"url": proxy.url, "password": qbittorrent.password},
                rabbitmq={"max_attempts": 50, "retry_delay_seconds": 1},
            )
        )
        infohash = random_hash()
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode(),
        )
        wait_until(
            lambda: sum(c.startswith("/api/v2/torrents/add") for c in proxy.calls) >= 2,
            15,
            "two failed attempts",
        )
        del proxy.fail_paths["/api/v2/torrents/add"]

        added = events.wait_for("downloads.added", hash=infohash, timeout=30)[0]
        assert added["duplicate"] is False
        assert len(events.of("downloads.received", hash=infohash)) == 1  # once, not per attempt
    finally:
        proxy.close()


def test_retries_pause_between_attempts_then_dead_letter_as_retries_exhausted(
    qbittorrent, make_config, start_service, broker, names, events
):
    # qBittorrent polls fine, but every add answers 503: 3 attempts 1 s apart take >= 2 s.
    proxy = HttpFaultProxy(qbittorrent.url)
    proxy.fail_paths["/api/v2/torrents/add"] = 503
    start_service(
        make_config(
            None,
            qbittorrent={"url": proxy.url, "password": qbittorrent.password},
            rabbitmq={"max_attempts": 3, "retry_delay_seconds": 1},
        )
    )
    sent = time.monotonic()
    broker.publish(
        names.command_exchange,
        "downloads.add",
        json.dumps({"magnet": magnet_for(random_hash()), "category": "tv"}).encode(),
        message_id="m-1",
    )

    dead = broker.get_all(names.dead_letter_queue, timeout=30, count=1)
    elapsed = time.monotonic() - sent
    assert len(dead) == 1
    props, _ = dead[0]
    assert props.headers["x-error-reason"] == "retries_exhausted"
    assert props.headers["x-attempts"] == 3
    assert "HTTP 503" in props.headers["x-error-detail"]
    # 3 attempts; qbittorrent-api itself sends each request twice on a 5xx.
    assert sum(c.startswith("/api/v2/torrents/add") for c in proxy.calls) == 3 * 2
    proxy.close()
    assert props.message_id == "m-1"
    assert elapsed >= 2.0
    failed = events.wait_for("downloads.failed")[0]
    assert failed["reason"] == "retries_exhausted"
    assert failed["request_id"] == "m-1"
