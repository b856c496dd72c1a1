"""RabbitMQ going away: the service reconnects by itself, loses nothing, keeps order."""

from __future__ import annotations

import logging
import shutil
import time
from urllib.parse import urlsplit

import pytest

from tests.fixtures.faults import TcpProxy, broker_memory_alarm
from tests.fixtures.rabbitmq import force_close_connections, wait_until
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live

FAST = {"interval_seconds": 0.25}


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(
        netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    ).geturl()


def send(broker, names, infohash, request_id):
    broker.add(names.command_exchange, magnet_for(infohash), "tv", request_id)


def test_unreachable_broker_then_back_loses_nothing_and_keeps_order(
    qbittorrent, make_config, start_service, broker, names, events, amqp_url, caplog
):
    caplog.set_level(logging.INFO, logger="qbit_consumer")
    proxy = TcpProxy("127.0.0.1", urlsplit(amqp_url).port or 5672)
    try:
        start_service(
            make_config(qbittorrent, rabbitmq={"url": through(proxy, amqp_url)}, polling=FAST)
        )
        doomed = random_hash()
        send(broker, names, doomed, "doomed")
        events.wait_for("downloads.progress", hash=doomed)

        proxy.cut()  # the broker is unreachable for the service (not for the test)
        qbittorrent.client().torrents_delete(delete_files=True, torrent_hashes=doomed)
        late = random_hash()
        send(broker, names, late, "sent-during-outage")
        time.sleep(6)  # several reconnect attempts; the removal is confirmed meanwhile
        assert (
            events.of("downloads.removed") == [] and events.of("downloads.added", hash=late) == []
        )
        proxy.restore()

        removed = events.wait_for("downloads.removed", hash=doomed, timeout=40)[0]
        assert removed["request_id"] == "doomed"
        events.wait_for("downloads.added", hash=late, timeout=40)
        of_doomed = [e["event"] for e in events.drain() if e["hash"] == doomed]
        assert of_doomed[:2] == ["downloads.received", "downloads.added"]
        assert of_doomed[-1] == "downloads.removed" and of_doomed.count("downloads.removed") == 1
        assert set(of_doomed[2:-1]) == {"downloads.progress"}
        messages = [r.getMessage() for r in caplog.records]  # before the teardown cuts again
    finally:
        proxy.close()
    # Each thread logs the outage once when it starts and once when it ends, not per attempt.
    for who in ("consumer", "publisher"):
        assert sum(m.startswith(f"{who} lost RabbitMQ") for m in messages) == 1
        assert sum(m.startswith(f"{who} reconnected to RabbitMQ") for m in messages) == 1


@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (root on the broker host)"
)
def test_connections_closed_by_the_broker_are_reopened_and_work_goes_on(
    qbittorrent, make_config, start_service, broker, names, events, amqp_url
):
    start_service(make_config(qbittorrent, polling=FAST))
    first, second = random_hash(), random_hash()
    send(broker, names, first, "before")
    events.wait_for("downloads.added", hash=first)

    closed = force_close_connections(amqp_url, "qbit-consumer consumer on")
    closed += force_close_connections(amqp_url, "qbit-consumer publisher on")
    assert closed == 2

    send(broker, names, second, "after")
    events.wait_for("downloads.added", hash=second, timeout=30)
    wait_until(
        lambda: events.of("downloads.progress", hash=second), 30, "progress after reconnecting"
    )
    assert broker.get_all(names.dead_letter_queue) == []


@pytest.mark.serial  # the alarm blocks every publisher of the broker, other tests' too
@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (root on the broker host)"
)
def test_a_broker_that_blocks_publishers_delays_lifecycle_events_and_loses_none(
    qbittorrent, make_config, start_service, broker, names, events
):
    # A memory or disk alarm: the TCP connections stay up, but the broker stops reading from
    # every connection that publishes; confirms do not come until the alarm clears.
    start_service(make_config(qbittorrent, polling=FAST))
    doomed = random_hash()
    send(broker, names, doomed, "doomed")
    events.wait_for("downloads.progress", hash=doomed)

    with broker_memory_alarm():
        qbittorrent.client().torrents_delete(delete_files=True, torrent_hashes=doomed)
        time.sleep(6)  # the removal is confirmed (3 s) and published into a blocked connection
        assert events.of("downloads.removed") == []

    removed = events.wait_for("downloads.removed", hash=doomed, timeout=30)[0]
    assert removed["request_id"] == "doomed"
    of_doomed = [e["event"] for e in events.drain() if e["hash"] == doomed]
    assert of_doomed[:2] == ["downloads.received", "downloads.added"]
    assert of_doomed[-1] == "downloads.removed" and of_doomed.count("downloads.removed") == 1
