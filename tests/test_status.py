"""``downloads.status`` on the real broker: what the running service says of itself, the
last-value queue that keeps the newest one, and ``qbit-consumer status`` as a dead-man's switch
(CONTRACT section 11)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from qbit_consumer.contract.events import EVENT_TYPES
from qbit_consumer.contract.status import COMMAND_OUTCOMES, read_status
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash, run_cli, service_ini, spawn_service

pytestmark = pytest.mark.live


def latest_status(broker, names) -> dict | None:
    """The status queue's message, given back (as ``qbit-consumer status`` does)."""
    channel = broker.channel
    method, _properties, body = channel.basic_get(names.status_queue, auto_ack=False)
    if method is None:
        return None
    channel.basic_reject(method.delivery_tag, requeue=True)
    return json.loads(body)


def test_the_status_counts_what_the_service_did_and_its_queue_keeps_only_the_newest(
    qbittorrent, qbt_version, make_config, start_service, broker, names, events
):
    cfg = make_config(qbittorrent, service={"status_interval_seconds": 1, "name": "nas-1"})
    start_service(cfg)
    infohash = random_hash()
    broker.add(names.command_exchange, magnet_for(infohash))
    broker.add(names.command_exchange, magnet_for(infohash))  # qBittorrent has it: duplicate
    broker.publish(names.command_exchange, "downloads.add", b"{not json")
    events.wait_for("downloads.failed")
    events.wait_for("downloads.added", count=2)

    def counted() -> dict | None:
        status = latest_status(broker, names)
        done = status is not None and status["commands"]["dead_lettered"] == 1
        return status if done and status["events"]["downloads.progress"] > 0 else None

    status = wait_until(counted, 15, "a status that counted the three commands")

    assert status["instance"] == "nas-1" and status["role"] == "active"
    assert status["commands"] == {
        **dict.fromkeys(COMMAND_OUTCOMES, 0),
        "added": 1,
        "duplicate": 1,
        "dead_lettered": 1,
    }
    assert set(status["events"]) == set(EVENT_TYPES)
    assert {k: v for k, v in status["events"].items() if k != "downloads.progress" and v} == {
        "downloads.received": 2,
        "downloads.added": 2,
        "downloads.failed": 1,
    }
    # Counted once confirmed, so never more than a consumer of the exchange got.
    assert 0 < status["events"]["downloads.progress"] <= len(events.of("downloads.progress"))
    assert status["tracked"] == {"total": 1, "active": 1}
    assert status["qbittorrent"]["reachable"] is True
    assert status["qbittorrent"]["version"] == f"v{qbt_version}"
    assert status["outbox"] == 0 and status["last_poll"]["seconds"] >= 0
    read_status(json.dumps(status).encode())  # it reads back as what it claims to be

    time.sleep(2.5)  # two more statuses: the queue still holds one, the newest
    assert broker.message_count(names.status_queue) == 1
    newer = latest_status(broker, names)
    assert newer is not None and newer["occurred_at"] > status["occurred_at"]
    assert newer["uptime_seconds"] > status["uptime_seconds"]
    props = next(
        p
        for e, p in zip(events.drain(), events.properties, strict=True)
        if e["event"] == "downloads.status"
    )
    assert props.delivery_mode == 2  # persistent: a broker restart keeps the newest


def test_the_status_is_not_kept_in_history(qbittorrent, make_config, start_service, broker, names):
    cfg = make_config(qbittorrent, service={"status_interval_seconds": 1})
    start_service(cfg)
    wait_until(lambda: latest_status(broker, names), 10, "a first status")
    infohash = random_hash()
    broker.add(names.command_exchange, magnet_for(infohash))
    wait_until(
        lambda: '"downloads.added"' in run_cli("history", "--json", "--config", cfg.source).stdout,
        15,
        "the add in history",
    )

    kept = run_cli("history", "--json", "--config", cfg.source).stdout.splitlines()
    assert [json.loads(line)["event"] for line in kept] == ["downloads.received", "downloads.added"]


def test_status_command_prints_the_newest_status_and_fails_once_the_service_is_gone(
    qbittorrent, amqp_url, names, broker, tmp_path
):
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        qbittorrent.url,
        qbittorrent.password,
        service={"status_interval_seconds": 1},
    )
    process = spawn_service(config, tmp_path / "service.log")
    try:
        fresh = wait_until(
            lambda: (r := run_cli("status", "--config", str(config))).returncode == 0 and r,
            15,
            "`status` to find a fresh status",
        )
        assert "qbit-consumer 0.1.0 (active): status of " in fresh.stdout
        assert "qBittorrent v" in fresh.stdout and ": reachable since " in fresh.stdout
        as_json = run_cli("status", "--json", "--config", str(config))
        assert json.loads(as_json.stdout)["event"] == "downloads.status"
    finally:
        process.send_signal(signal.SIGKILL)  # dead without a word: nothing more is published
        process.wait(10)

    stale = wait_until(
        lambda: (r := run_cli("status", "--config", str(config))).returncode == 1 and r,
        10,
        "`status` to call the status stale",
    )
    assert stale.stdout.splitlines()[-1].startswith("STALE: the newest status is ")
    assert "more than 3 intervals of 1 s" in stale.stdout
    assert broker.message_count(names.status_queue) == 1  # reading it took nothing away


def test_status_without_a_status_queue_says_which_queue_is_missing(amqp_url, names, tmp_path):
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        "http://127.0.0.1:9",
        "",
        service={"status_interval_seconds": 60},
    )

    result = run_cli("status", "--config", str(config))

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] + "\n" == (
        f"qbit-consumer: queue '{names.status_queue}' does not exist: the service declares it "
        "when it starts (with this config's broker, vhost and [rabbitmq] status_queue)\n"
    )
