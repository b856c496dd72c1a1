"""History: reading the audit trail back, and rebuilding the tracked set from it.

Goals: ``history --hash`` over a stream of 100,000 events in under 10 s; ``history --since``
over its last 1% in under 1 s, because the timestamp offset makes it read about 1% of the
stream, not all of it; a rebuild of 10,000 tracked downloads done before the first command in
under 15 s, with RSS at most 60 MB during it and 50 MB after.

The stream is filled the way the service fills it: real events (``contract.events``) published
to the event exchange the stream is bound to, with the service's own topology. ``history`` and
the service run as processes, as a user runs them, so their times include Python's start.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pika.exceptions

from bench.common import ROOT, ServiceProcess, memory_mib, qbittorrent
from qbit_consumer.broker import Broker
from qbit_consumer.broker.publishing import send_event
from qbit_consumer.broker.stream import StreamReader
from qbit_consumer.broker.topology import build_event_topology
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Added, Completed, Event, Received, Removed, rfc3339
from qbit_consumer.contract.messages import MANAGED_TAG
from qbit_consumer.tracking.state import State
from tests.fixtures.qbittorrent import wait_count
from tests.fixtures.rabbitmq import BrokerHelper, EventCollector, rabbitmqctl, vhost_of, wait_until
from tests.fixtures.service import TestNames, load, service_ini

#: Events published per wait for the broker's confirms.
CONFIRM_BATCH = 2000
_REBUILT = re.compile(
    r"rebuilt (\d+) tracked downloads from history and (\d+) more .* in ([\d.]+) s"
)


def lifecycle(infohash: str, number: int, *, until_removed: bool = True) -> list[Event]:
    """The events a download added by a message leaves in the stream: received and added, and
    when ``until_removed``, completed and removed too (progress events are not kept)."""
    name = f"Some.Show.S{number // 100 % 100:02d}E{number % 100:02d}.1080p.WEB.h264-GROUP"
    common = {
        "request_id": f"req-{number}",
        "hash": infohash,
        "infohash_v2": None,
        "name": name,
        "category": "tv",
    }
    events: list[Event] = [
        Received(**common, magnet=f"magnet:?xt=urn:btih:{infohash}&dn={name}", source="magnet"),
        Added(**common, save_path="/downloads/tv", duplicate=False),
    ]
    if until_removed:
        events += [
            Completed(
                **common,
                size=1_473_741_824,
                save_path="/downloads/tv",
                content_path=f"/downloads/tv/{name}",
                completed_at=rfc3339(),
            ),
            Removed(
                **common,
                reason="command",
                files_deleted=False,
                last_state="stalledUP",
                last_progress=1.0,
                completed=True,
            ),
        ]
    return events


def publish(amqp_url: str, cfg: Config, batches: Iterable[Iterable[Event]]) -> int:
    """Declare the service's event topology (the stream and its bindings) and publish."""
    broker = Broker(amqp_url, role="benchmark platform")
    broker.connect()
    sent = 0
    try:
        broker.declare(build_event_topology(cfg))
        for batch in batches:
            for event in batch:
                send_event(broker, cfg.rabbitmq.event_exchange, event.envelope())
                sent += 1
                if sent % CONFIRM_BATCH == 0:
                    broker.settle()
        broker.settle()
    finally:
        broker.close()
    return sent


def read_back(root: Path, amqp_url: str, total: int = 100_000) -> dict[str, float]:
    """A stream of ``total`` events (``total / 4`` downloads), its last 1% published two
    seconds after the rest; then ``history --hash`` of a download whose steps span the whole
    stream, and ``history --since`` the pause, side by side with how many messages the stream
    hands over from the first one and from ``--since``."""
    names = TestNames()
    # No qBittorrent: `history` never asks it anything.
    config = service_ini(
        root / f"{names.command_queue}.ini", amqp_url, names, "http://127.0.0.1:9", "unused"
    )
    cfg = load(config)
    downloads = [secrets.token_hex(20) for _ in range(total // 4)]
    spanning, late_count = downloads[0], total // 100 // 4
    early, late = downloads[1 : len(downloads) - late_count], downloads[-late_count:]
    try:
        started = time.monotonic()
        published = publish(
            amqp_url,
            cfg,
            [
                lifecycle(spanning, 0)[:2],
                (e for n, h in enumerate(early, 1) for e in lifecycle(h, n)),
            ],
        )
        fill_seconds = time.monotonic() - started
        time.sleep(2.0)  # the offset's timestamps are whole seconds
        since = datetime.now(UTC).replace(microsecond=0)
        time.sleep(1.0)
        recent = publish(
            amqp_url,
            cfg,
            [lifecycle(spanning, 0)[2:], (e for n, h in enumerate(late) for e in lifecycle(h, n))],
        )
        published += recent

        hash_seconds, hash_lines = _history(config, "--hash", spanning, "--json")
        since_seconds, since_lines = _history(config, "--since", since.isoformat(), "--json")
        disk = _stream_bytes(amqp_url, cfg.history.stream)
        return {
            "events": published,
            "fill_seconds": round(fill_seconds, 1),
            "hash_seconds": round(hash_seconds, 2),
            "hash_events_printed": len(hash_lines),
            "since_seconds": round(since_seconds, 2),
            "since_events_printed": len(since_lines),
            "since_events_published": recent,
            "messages_read_from_first": _messages_read(amqp_url, cfg.history.stream, "first"),
            "messages_read_from_since": _messages_read(amqp_url, cfg.history.stream, since),
            "stream_bytes_on_disk": disk,
            "bytes_per_event_on_disk": round(disk / published) if disk > 0 else -1,
            "body_bytes_per_event": round(
                sum(len(json.dumps(json.loads(line))) for line in hash_lines) / len(hash_lines)
            ),
        }
    finally:
        helper = BrokerHelper(amqp_url)
        helper.delete(names.queues, names.exchanges)
        helper.close()


def recovery(
    root: Path, amqp_url: str, tracked: int = 10_000, gone: int = 10_000, steady: float = 30
) -> dict[str, float]:
    """No state file, ``tracked`` managed torrents in qBittorrent that history says were
    added, and ``gone`` downloads history says were completed and removed: the time from the
    service's start to its first command (one published at once, taken only after the
    rebuild), RSS during and after."""
    qbit = qbittorrent(root, "history-recovery")
    qbit.start()
    service = ServiceProcess(root, amqp_url, qbit, polling={"interval_seconds": 5})
    try:
        client = qbit.client()
        client.torrents_create_category(name="tv")
        hashes = [secrets.token_hex(20) for _ in range(tracked)]
        for start in range(0, tracked, 500):
            client.torrents_add(
                urls="\n".join(f"magnet:?xt=urn:btih:{h}" for h in hashes[start : start + 500]),
                category="tv",
                tags=MANAGED_TAG,
            )
        wait_count(client, tracked)
        old = [secrets.token_hex(20) for _ in range(gone)]
        events_in_history = publish(
            amqp_url,
            load(service.config),
            [
                (e for n, h in enumerate(old) for e in lifecycle(h, n)),
                (e for n, h in enumerate(hashes) for e in lifecycle(h, n, until_removed=False)),
            ],
        )
        assert not service.state_path.exists()

        events = EventCollector(amqp_url, service.names.event_exchange, "downloads.received")
        started = time.monotonic()
        process = service.start_process()
        helper = BrokerHelper(amqp_url)
        try:
            wait_until(lambda: helper.exists(service.names.command_queue), 60, "the queue")
        finally:
            helper.close()
        command = secrets.token_hex(20)
        _send_add(amqp_url, service.names.command_exchange, command)
        wait_until(lambda: events.of("downloads.received"), 60, "the first command", 0.01)
        first_command = time.monotonic() - started
        _, peak_during = memory_mib(process.pid)  # VmHWM: the peak since the start

        after: list[float] = []
        end = time.monotonic() + steady
        while time.monotonic() < end:
            after.append(memory_mib(process.pid)[0])
            time.sleep(0.5)
        events.close()
        service.stop()
        rebuilt = _REBUILT.search(service.log.read_text())
        state = State(service.state_path)
        try:
            in_state = len(state.load_downloads())
        finally:
            state.close()
        return {
            "tracked_in_qbittorrent": tracked,
            "gone_in_history": gone,
            "events_in_history": events_in_history,
            "rebuilt_from_history": int(rebuilt.group(1)) if rebuilt else -1,
            "adopted_from_tag": int(rebuilt.group(2)) if rebuilt else -1,
            "rebuild_seconds_logged": float(rebuilt.group(3)) if rebuilt else -1,
            "start_to_first_command_seconds": round(first_command, 2),
            "tracked_in_state_after": in_state,
            "rss_peak_during_mib": round(peak_during, 1),
            "rss_after_median_mib": round(sorted(after)[len(after) // 2], 1),
            "rss_after_end_mib": round(after[-1], 1),
        }
    finally:
        service.stop()
        service.cleanup()
        qbit.stop()


def _send_add(amqp_url: str, exchange: str, infohash: str) -> None:
    """Publish one add as soon as the broker routes it (the queue's bindings follow it)."""
    body = json.dumps({"magnet": f"magnet:?xt=urn:btih:{infohash}", "category": "tv"}).encode()
    deadline = time.monotonic() + 30
    while True:
        helper = BrokerHelper(amqp_url)
        try:
            helper.publish(exchange, "downloads.add", body)
            return
        except pika.exceptions.UnroutableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        finally:
            helper.close()


def _history(config: Path, *args: str) -> tuple[float, list[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "qbit_consumer", "history", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return time.monotonic() - started, done.stdout.splitlines()


def _messages_read(url: str, stream: str, start: datetime | str) -> int:
    """How many messages the stream hands over from ``start`` to its end: from a time, the
    chunks before it are never read (the offset at work, not a filter)."""
    reader = StreamReader(url, role="benchmark")
    reader.connect()
    try:
        end = reader.stream_end(stream)
        assert end is not None
        return sum(1 for _ in reader.read(stream, start, end))
    finally:
        reader.close()


def _stream_bytes(amqp_url: str, stream: str) -> int:
    """The stream's segment and index files on this machine's RabbitMQ disk; -1 when they
    cannot be read here (a broker elsewhere)."""
    data = rabbitmqctl("eval", "rabbit_mnesia:dir().")
    if data is None:
        return -1
    prefix = f"{vhost_of(amqp_url)}_{stream}_".replace(".", "_")
    found = [p for p in (Path(data.strip('"')) / "stream").glob("*") if p.name.startswith(prefix)]
    if len(found) != 1:
        return -1
    return sum(f.stat().st_size for f in found[0].iterdir() if f.is_file())


def main() -> None:
    """``python -m bench.history``: both measurements, printed as JSON."""
    import tempfile

    from tests.fixtures.rabbitmq import TestVhost

    with tempfile.TemporaryDirectory(prefix="qbc-bench-") as tmp, TestVhost() as amqp_url:
        root = Path(tmp)
        results = {"read_back": read_back(root, amqp_url), "recovery": recovery(root, amqp_url)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
