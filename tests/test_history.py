"""The audit trail: a RabbitMQ stream bound to the event exchange, written by the broker itself,
read from any point without being consumed (CONTRACT sections 3 and 8)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pika
import pytest

from qbit_consumer.cli.main import main
from qbit_consumer.tracking.state import State
from tests.fixtures.rabbitmq import BrokerHelper, wait_until
from tests.fixtures.service import magnet_for, random_hash, run_cli

pytestmark = pytest.mark.live


def read_history(amqp_url: str, stream: str, offset: Any = "first") -> list[dict[str, Any]]:
    """Every event in ``stream`` from ``offset``, as another service of the platform would
    read it: a prefetch, manual acks, the ``x-stream-offset`` argument; nothing is consumed."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        found: list[dict[str, Any]] = []
        for method, _props, body in channel.consume(
            stream, arguments={"x-stream-offset": offset}, inactivity_timeout=1.0
        ):
            if method is None:
                break
            found.append(json.loads(body))
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
        return found
    finally:
        connection.close()


def add(broker: BrokerHelper, names: Any, infohash: str, request_id: str) -> None:
    broker.add(names.command_exchange, magnet_for(infohash), "tv", request_id)


def test_the_stream_keeps_every_lifecycle_event_and_no_progress_and_reading_consumes_nothing(
    amqp_url, qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent, polling={"interval_seconds": 0.5}))
    infohash = random_hash()
    add(broker, names, infohash, "kept")
    events.wait_for("downloads.progress", hash=infohash, count=2)
    broker.publish(names.command_exchange, "downloads.add", b"not json")
    events.wait_for("downloads.failed")
    qbittorrent.client().torrents_delete(torrent_hashes=infohash, delete_files=True)
    events.wait_for("downloads.removed", hash=infohash, timeout=20)

    def kinds() -> list[str]:
        return [e["event"] for e in read_history(amqp_url, names.history_stream)]

    wait_until(lambda: "downloads.removed" in kinds(), 10, "the removal in the stream")
    trail = read_history(amqp_url, names.history_stream)
    mine = [e["event"] for e in trail if e["hash"] == infohash]
    assert mine == ["downloads.received", "downloads.added", "downloads.removed"]
    assert "downloads.failed" in [e["event"] for e in trail]
    assert "downloads.progress" not in [e["event"] for e in trail]
    # Read twice, the same: a stream is not consumed by its readers.
    assert read_history(amqp_url, names.history_stream) == trail
    # The bodies are the events as published, event_id and all.
    published = {e["event_id"] for e in events.drain()} | {
        e["event_id"] for e in events.of("downloads.removed")
    }
    assert {e["event_id"] for e in trail} <= published | {e["event_id"] for e in trail}
    assert len({e["event_id"] for e in trail}) == len(trail)


def test_a_queue_of_the_history_name_with_other_arguments_stops_the_service_untouched(
    qbittorrent, make_config, start_service, broker, names
):
    broker.channel.queue_declare(names.history_stream, durable=True)  # a classic queue
    broker.publish("", names.history_stream, b"keep me")

    service = start_service(make_config(qbittorrent))

    assert service.stop() == 1
    failure = str(service.service.consumer.failure or service.service.publisher.failure)
    assert f"queue '{names.history_stream}' already exists with a different" in failure
    assert "left untouched" in failure
    assert broker.get_all(names.history_stream)[0][1] == b"keep me"


def test_with_history_disabled_no_stream_is_declared_and_events_flow_as_before(
    qbittorrent, make_config, start_service, broker, names, events, caplog
):
    caplog.set_level(logging.INFO, logger="qbit_consumer")
    start_service(make_config(qbittorrent, history={"enabled": "false"}))
    assert any("history is disabled: nothing to rebuild" in r.getMessage() for r in caplog.records)
    infohash = random_hash()
    add(broker, names, infohash, "no-history")
    events.wait_for("downloads.added", hash=infohash)
    assert not broker.exists(names.history_stream)


KINDS = {"received", "added", "removed", "completed", "failed", "paused", "stalled", "errored"}


def history_cli(cfg, *args: str, capsys) -> tuple[int, list[str]]:
    """What `qbit-consumer history` prints, but the config's own warnings (a readable file)."""
    code = main(["history", "--config", cfg.source, *args])
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    return code, [line for line in lines if not line.startswith("warning:")]


def test_history_hash_prints_a_downloads_timeline_and_json_prints_the_bodies_unchanged(
    amqp_url, qbittorrent, make_config, start_service, broker, names, events, capsys
):
    cfg = make_config(qbittorrent, polling={"interval_seconds": 0.5})
    start_service(cfg)
    infohash, other = random_hash(), random_hash()
    add(broker, names, infohash, "timeline")
    add(broker, names, other, "someone-else")
    events.wait_for("downloads.added", hash=other)
    qbittorrent.client().torrents_delete(torrent_hashes=infohash, delete_files=True)
    events.wait_for("downloads.removed", hash=infohash, timeout=20)
    wait_until(
        lambda: any(
            e["event"] == "downloads.removed" for e in read_history(amqp_url, names.history_stream)
        ),
        10,
        "the removal in the stream",
    )

    code, lines = history_cli(cfg, "--hash", infohash.upper(), capsys=capsys)

    assert code == 0
    assert [next(w for w in line.split() if w in KINDS) for line in lines] == [
        "received",
        "added",
        "removed",
    ], lines
    assert all(line.split()[2].startswith("+") for line in lines[1:]), lines
    assert all("id=timeline" in line for line in lines)
    code, bodies = history_cli(cfg, "--request-id", "timeline", "--json", capsys=capsys)
    kept = [e for e in read_history(amqp_url, names.history_stream) if e["hash"] == infohash]
    assert [json.loads(body) for body in bodies] == kept


def test_history_since_starts_reading_at_that_time_not_at_the_beginning(
    amqp_url, qbittorrent, make_config, start_service, broker, names, events
):
    from datetime import UTC, datetime

    from qbit_consumer.broker.stream import StreamReader

    start_service(make_config(qbittorrent))
    early = [random_hash() for _ in range(3)]
    for infohash in early:
        add(broker, names, infohash, "early")
    for infohash in early:
        events.wait_for("downloads.added", hash=infohash)
    time.sleep(1.5)  # a stream's timestamps are whole seconds
    mark = datetime.now(UTC)
    time.sleep(1.0)
    late = random_hash()
    add(broker, names, late, "late")
    events.wait_for("downloads.added", hash=late)
    wait_until(lambda: len(read_history(amqp_url, names.history_stream)) == 8, 10, "8 events")

    everything = read_history(amqp_url, names.history_stream)
    reader = StreamReader(amqp_url, role="test")
    reader.connect()
    try:
        end = reader.stream_end(names.history_stream)
        read = list(reader.read(names.history_stream, mark, end))
    finally:
        reader.close()
    # The offsets prove where the reading began: the 6 older events were never sent to it.
    assert [offset for offset, _ in read] == [6, 7]
    assert [json.loads(body)["request_id"] for _, body in read] == ["late", "late"]
    assert len(everything) == 8


def read_with_offsets(amqp_url: str, stream: str, offset: Any) -> list[tuple[int, dict]]:
    """(x-stream-offset, event) from ``offset``: what a platform service keeps to resume."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        found = []
        for method, props, body in channel.consume(
            stream, arguments={"x-stream-offset": offset}, inactivity_timeout=1.0
        ):
            if method is None:
                break
            found.append((props.headers["x-stream-offset"], json.loads(body)))
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
        return found
    finally:
        connection.close()


def test_a_platform_service_that_was_offline_reads_what_it_missed_by_offset_or_by_time(
    amqp_url, qbittorrent, make_config, start_service, broker, names, events
):
    from datetime import UTC, datetime

    start_service(make_config(qbittorrent))
    first, second = random_hash(), random_hash()
    add(broker, names, first, "before")
    events.wait_for("downloads.added", hash=first)
    wait_until(
        lambda: len(read_with_offsets(amqp_url, names.history_stream, "first")) == 2, 10, "2"
    )
    seen = read_with_offsets(amqp_url, names.history_stream, "first")
    last_offset = seen[-1][0]  # what the platform service stored before it went away

    time.sleep(1.5)  # a stream's timestamps are whole seconds
    went_away = datetime.now(UTC)
    time.sleep(1.0)
    add(broker, names, second, "while-away")
    events.wait_for("downloads.added", hash=second)
    qbittorrent.client().torrents_delete(delete_files=True, torrent_hashes=first)
    events.wait_for("downloads.removed", hash=first, timeout=20)
    wait_until(
        lambda: len(read_with_offsets(amqp_url, names.history_stream, "first")) == 5, 10, "5"
    )

    by_offset = read_with_offsets(amqp_url, names.history_stream, last_offset + 1)
    by_time = read_with_offsets(amqp_url, names.history_stream, went_away)
    missed = [
        ("downloads.added", second),
        ("downloads.received", second),
        ("downloads.removed", first),
    ]
    assert sorted((e["event"], e["hash"]) for _, e in by_offset) == missed
    assert by_time == by_offset  # the same events, from the same place in the stream
    assert by_time[0][0] == last_offset + 1  # the time offset skipped what it had read
    removed = next(e for _, e in by_time if e["event"] == "downloads.removed")
    assert removed["request_id"] == "before"


def test_history_of_a_missing_stream_or_an_empty_range_says_so_in_one_line(
    qbittorrent, make_config, start_service, broker, names, events, capsys
):
    missing = make_config(qbittorrent, history={"stream": f"{names.history_stream}.nowhere"})
    code, lines = history_cli(missing, capsys=capsys)
    assert code == 1 and len(lines) == 1
    assert "there is no history stream" in lines[0]

    cfg = make_config(qbittorrent)
    start_service(cfg)
    add(broker, names, random_hash(), "now")
    events.wait_for("downloads.added", request_id="now")
    code, lines = history_cli(cfg, "--since", "2000-01-01", "--until", "2000-01-02", capsys=capsys)
    assert code == 0 and len(lines) == 1 and lines[0].startswith("no events in"), lines


def test_a_state_file_lost_while_stopped_is_rebuilt_from_history_and_qbittorrent(
    amqp_url, qbit_factory, seeder, make_config, start_service, broker, names, events
):
    # A qBittorrent of its own: every torrent with the managed tag in it is this test's.
    qbittorrent = qbit_factory("recovery")
    # A poll every 30 s: nothing that happens between the adds and the stop is polled.
    cfg = make_config(qbittorrent, polling={"interval_seconds": 30})
    running = start_service(cfg)
    payload = seeder.share(2 * 2**20)
    removed, active = random_hash(), [random_hash(), random_hash()]
    body = {"magnet": payload.magnet, "category": "tv", "request_id": "completes"}
    broker.publish(names.command_exchange, "downloads.add", json.dumps(body).encode())
    add(broker, names, removed, "removed-meanwhile")
    for number, infohash in enumerate(active):
        add(broker, names, infohash, f"active-{number}")
    for infohash in (payload.infohash, removed, *active):
        events.wait_for("downloads.added", hash=infohash)
    assert running.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        cfg.state.path.with_name(cfg.state.path.name + suffix).unlink(missing_ok=True)

    client = qbittorrent.client()
    client.torrents_delete(torrent_hashes=removed, delete_files=True)
    wait_until(
        lambda: client.torrents_info(torrent_hashes=payload.infohash)[0]["amount_left"] == 0,
        60,
        "the download to complete while the service is stopped",
    )
    before = len(events.drain())

    restarted = start_service(make_config(qbittorrent, polling={"interval_seconds": 0.5}))
    events.wait_for("downloads.completed", hash=payload.infohash, timeout=30)
    events.wait_for("downloads.removed", hash=removed, timeout=30)
    time.sleep(2)  # more poll cycles: nothing may be reported twice

    after = [e for e in events.drain()[before:] if e["event"] != "downloads.progress"]
    assert sorted((e["event"], e["request_id"]) for e in after) == [
        ("downloads.completed", "completes"),
        ("downloads.removed", "removed-meanwhile"),
    ]
    tracked = {d.hash: d for d in restarted.service.registry.snapshot()}
    assert {tracked[h].request_id for h in active} == {"active-0", "active-1"}
    assert tracked[payload.infohash].stage == "completed"
    assert removed not in tracked


def test_a_corrupt_state_file_stops_run_with_a_line_naming_recover_which_rebuilds_it(
    qbit_factory, make_config, start_service, broker, names, events
):
    # A qBittorrent of its own: every torrent with the managed tag in it is this test's.
    qbittorrent = qbit_factory("recover")
    cfg = make_config(qbittorrent)
    running = start_service(cfg)
    hashes = [random_hash(), random_hash()]
    for number, infohash in enumerate(hashes):
        add(broker, names, infohash, f"kept-{number}")
    for infohash in hashes:
        events.wait_for("downloads.added", hash=infohash)
    assert running.stop() == 0
    garbage = b"not a state file " * 512
    cfg.state.path.write_bytes(garbage)
    for suffix in ("-wal", "-shm"):
        cfg.state.path.with_name(cfg.state.path.name + suffix).unlink(missing_ok=True)

    refused = run_cli("run", "--config", cfg.source)
    assert refused.returncode == 1
    [line] = [line for line in refused.stderr.splitlines() if "state error" in line]
    assert "`qbit-consumer recover`" in line

    recovered = run_cli("recover", "--config", cfg.source)
    assert recovered.returncode == 0, recovered.stderr
    assert "moved the corrupt state file to" in recovered.stdout
    assert "2 tracked downloads" in recovered.stdout
    [aside] = cfg.state.path.parent.glob(cfg.state.path.name + ".corrupt-*")
    assert aside.read_bytes() == garbage  # moved, never deleted nor changed
    tracked = State(cfg.state.path).load_downloads()
    assert sorted(d.request_id for d in tracked) == ["kept-0", "kept-1"]
