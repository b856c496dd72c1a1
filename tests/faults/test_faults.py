"""Fault injection on the real services: nothing lost, nothing doubled.

`make test` runs these at a small scale; `make faults` (FAULTS_SCALE=full) at the scale of
docs/reliability.md: 1,000 commands through 5 forced connection closes, 1,000 commands through
2 qBittorrent restarts, and SIGKILLs of the service in the middle of real downloads. Each test
prints its figures: commands sent / torrents added (each once) / added events / DLQ entries /
completions per download. One more test checks that the suite's own broker clients outlive
the idle stretches these tests leave them in.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from tests.fixtures.rabbitmq import (
    BrokerHelper,
    EventCollector,
    force_close_connections,
    wait_until,
)
from tests.fixtures.service import magnet_for, random_hash, service_ini, spawn_service

pytestmark = pytest.mark.live

FULL = os.environ.get("FAULTS_SCALE") == "full"
SCALE = {
    "commands": 1000 if FULL else 100,
    "closes": 5 if FULL else 2,
    "qbit_restarts": 2 if FULL else 1,
    "kills": 3 if FULL else 1,
    "downloads": 4 if FULL else 2,
}
REPORT = []


def report(name: str, **figures: object) -> None:
    line = f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    REPORT.append(line)
    print("\n" + line)
    path = os.environ.get("FAULTS_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": name, **figures}) + "\n")


def publish_all(url: str, exchange: str, hashes: list[str], spread_seconds: float) -> None:
    helper = BrokerHelper(url)
    try:
        for number, infohash in enumerate(hashes):
            helper.publish(
                exchange,
                "downloads.add",
                json.dumps(
                    {"magnet": magnet_for(infohash), "category": "tv", "request_id": f"f-{number}"}
                ).encode(),
            )
            time.sleep(spread_seconds / len(hashes))
    finally:
        helper.close()


def settle(qbit, broker, names, events, hashes, timeout):
    """Wait until every command is done, then count what happened."""
    client = qbit.client()
    wait_until(
        lambda: (
            {e["hash"] for e in events.of("downloads.added")} >= set(hashes)
            or broker.message_count(names.dead_letter_queue) > 0
        ),
        timeout,
        "every command's outcome",
    )
    wait_until(
        lambda: (
            broker.message_count(names.command_queue) == 0
            and broker.message_count(names.retry_queue) == 0
        ),
        60,
        "the queues to drain",
    )
    listed = {t.hash for t in client.torrents_info(torrent_hashes=hashes)} if hashes else set()
    added = Counter(e["hash"] for e in events.of("downloads.added"))
    return {
        "commands_sent": len(hashes),
        "torrents_in_qbittorrent": len(listed & set(hashes)),
        "added_events": sum(added.values()),
        "added_events_duplicate": sum(1 for e in events.of("downloads.added") if e["duplicate"]),
        "commands_without_added": len(set(hashes) - set(added)),
        "dlq_entries": broker.message_count(names.dead_letter_queue),
    }


def with_heartbeat(url: str, seconds: int) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"heartbeat={seconds}") if q)
    return parts._replace(query=query).geturl()


def test_test_clients_survive_idling_past_the_heartbeat_timeout(broker, names, amqp_url):
    """The fault tests leave their helpers idle for minutes (threads publish, qBittorrent
    restarts) while pika answers heartbeats only inside its own calls: the broker drops such a
    client. Here a 2 s heartbeat and 8 s of sleep make that happen; what was published
    meanwhile must still be counted and collected."""
    url = with_heartbeat(amqp_url, 2)
    broker.channel.queue_declare(names.command_queue, durable=True)
    idle_helper = BrokerHelper(url)
    idle_events = EventCollector(url, names.event_exchange)
    try:
        time.sleep(8)
        broker.publish("", names.command_queue, b"sent while the helper slept")
        event = {"event": "downloads.added", "event_id": "idle-1"}
        broker.publish(names.event_exchange, "downloads.added", json.dumps(event).encode())

        assert idle_helper.message_count(names.command_queue) == 1
        assert idle_events.wait_for("downloads.added", timeout=5) == [event]
        assert idle_helper.reconnects == idle_events.reconnects == 1  # the broker did drop them
    finally:
        idle_events.close()
        idle_helper.close()


def test_commands_survive_connections_force_closed_by_the_broker(
    qbittorrent, make_config, start_service, broker, names, events, amqp_url
):
    start_service(make_config(qbittorrent))
    hashes = [random_hash() for _ in range(SCALE["commands"])]
    spread = SCALE["commands"] / 40  # seconds over which they are sent
    sender = threading.Thread(
        target=publish_all, args=(amqp_url, names.command_exchange, hashes, spread)
    )
    sender.start()
    closes = 0
    for _ in range(SCALE["closes"]):
        time.sleep(spread / (SCALE["closes"] + 1))
        closes += force_close_connections(amqp_url, "qbit-consumer consumer on")
        closes += force_close_connections(amqp_url, "qbit-consumer publisher on")
    sender.join()

    figures = settle(qbittorrent, broker, names, events, hashes, timeout=120)
    report("forced connection closes", connections_closed=closes, **figures)
    assert closes >= 2 * SCALE["closes"] - 1  # a close may find a connection still reopening
    assert figures["torrents_in_qbittorrent"] == len(hashes)
    assert figures["commands_without_added"] == 0
    assert figures["dlq_entries"] == 0


def test_commands_survive_qbittorrent_stopped_and_started(
    qbit_factory, make_config, start_service, broker, names, events, amqp_url
):
    qbit = qbit_factory("restarts")
    start_service(make_config(qbit, polling={"interval_seconds": 0.5}))
    hashes = [random_hash() for _ in range(SCALE["commands"])]
    spread = SCALE["commands"] / 40
    sender = threading.Thread(
        target=publish_all, args=(amqp_url, names.command_exchange, hashes, spread)
    )
    sender.start()
    for _ in range(SCALE["qbit_restarts"]):
        time.sleep(spread / (SCALE["qbit_restarts"] + 1))
        qbit.stop()
        time.sleep(3)
        qbit.start()
    sender.join()

    figures = settle(qbit, broker, names, events, hashes, timeout=180)
    retried = sum(1 for e in events.of("downloads.received"))
    report(
        "qBittorrent restarts", restarts=SCALE["qbit_restarts"], received_events=retried, **figures
    )
    assert figures["torrents_in_qbittorrent"] == len(hashes)
    assert figures["commands_without_added"] == 0
    assert figures["dlq_entries"] == 0


def test_sigkill_in_the_middle_of_real_downloads_gives_exactly_one_completion_each(
    qbit_factory, seeder, amqp_url, names, broker, events, tmp_path
):
    leecher = qbit_factory("killed")
    leecher.client().app_set_preferences({"dl_limit": 2 * 2**20})
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        leecher.url,
        leecher.password,
        polling={"interval_seconds": 0.5},
        logging={"format": "text", "level": "INFO"},
    )

    def start():
        return spawn_service(config, tmp_path / "service.log")

    process = start()
    payloads = [seeder.share(6 * 2**20) for _ in range(SCALE["downloads"])]
    for number, payload in enumerate(payloads):
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps(
                {"magnet": payload.magnet, "category": "movies", "request_id": f"k-{number}"}
            ).encode(),
        )
    kills = 0
    try:
        for _ in range(SCALE["kills"]):
            wait_until(lambda: events.of("downloads.progress"), 30, "downloads to be under way")
            time.sleep(1.0)
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            process = start()
        wait_until(
            lambda: len({e["hash"] for e in events.of("downloads.completed")}) == len(payloads),
            120,
            "every download to complete",
        )
        time.sleep(2)  # a few more cycles: no second completion may follow
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    completed = events.of("downloads.completed")
    per_download = Counter(e["hash"] for e in completed)
    distinct_ids = {
        h: len({e["event_id"] for e in completed if e["hash"] == h}) for h in per_download
    }
    report(
        "SIGKILL mid-download",
        kills=kills,
        downloads=len(payloads),
        completed_events=len(completed),
        completions_per_download=sorted(distinct_ids.values()),
        repeated_deliveries=len(completed) - len(distinct_ids),
    )
    assert set(per_download) == {p.infohash for p in payloads}
    assert all(count == 1 for count in distinct_ids.values()), (
        distinct_ids
    )  # repeats keep their event_id
    assert {e["request_id"] for e in completed} == {f"k-{n}" for n in range(len(payloads))}
