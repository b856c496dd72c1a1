"""Transient failures go through the retry queue, never in a hot loop, and end in the DLQ
only after max_attempts."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live


def test_command_is_retried_while_qbittorrent_is_stopped_and_added_once_it_is_back(
    qbit_factory, make_config, start_service, broker, names, events
):
    qbit = qbit_factory()
    start_service(make_config(qbit, rabbitmq={"max_attempts": 50, "retry_delay_seconds": 1}))
    qbit.stop()
    infohash = random_hash()
    broker.publish(
        names.command_exchange,
        "downloads.add",
        json.dumps({"magnet": magnet_for(infohash), "category": "tv", "request_id": "r"}).encode(),
    )

    time.sleep(3.5)  # a few retry rounds while it is down
    assert events.of("downloads.added") == []
    qbit.start()

    added = events.wait_for("downloads.added", hash=infohash, timeout=30)[0]
    assert added["duplicate"] is False
    assert added["request_id"] == "r"
    assert len(events.of("downloads.received", hash=infohash)) == 1  # once, not per attempt
    assert qbit.client().torrents_info(torrent_hashes=infohash)
    assert broker.get_all(names.dead_letter_queue) == []


def test_retries_pause_between_attempts_instead_of_looping(
    make_config, start_service, broker, names, events
):
    # qBittorrent is nowhere (port 9 refuses); 3 attempts 1 s apart take at least 2 s.
    start_service(make_config(None, rabbitmq={"max_attempts": 3, "retry_delay_seconds": 1}))
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
    assert "unreachable" in props.headers["x-error-detail"]
    assert props.message_id == "m-1"
    assert elapsed >= 2.0
    failed = events.wait_for("downloads.failed")[0]
    assert failed["reason"] == "retries_exhausted"
    assert failed["request_id"] == "m-1"
