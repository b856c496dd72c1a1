"""Memory: the service's RSS with 10,000 tracked downloads, and during a burst of commands."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from bench.common import (
    ServiceProcess,
    memory_mib,
    publish_commands,
    qbittorrent,
)
from qbit_consumer.model import Download
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State
from tests.fixtures.qbittorrent import dead_magnets, wait_count
from tests.fixtures.rabbitmq import wait_until


def tracked_steady_state(
    root: Path, amqp_url: str, tracked: int = 10_000, seconds: float = 30, active: int | None = None
) -> dict[str, float]:
    """``tracked`` downloads tracked, ``active`` of them incomplete (default: all, the worst
    case: each gets a progress event every cycle); the others are recorded as completed, as in
    a library where most tracked downloads are done."""
    qbit = qbittorrent(root, "memory-tracked")
    qbit.start()
    service = ServiceProcess(root, amqp_url, qbit, polling={"interval_seconds": 5})
    try:
        client = qbit.client()
        hashes = dead_magnets(client, tracked)
        wait_count(client, tracked)
        state = State(service.state_path)
        registry = Registry(state, PublishQueue())
        registry.track(
            [
                Download.added(hash=h, request_id=None, category="tv", name=h, qbit_id=h)
                for h in hashes
            ]
        )
        if active is not None:
            for download in registry.snapshot()[active:]:
                download.stage = "completed"
            registry.record(
                updated=registry.snapshot(), persist=[d.hash for d in registry.snapshot()]
            )
        state.close()
        events = service.start(binding_keys=["downloads.progress"])
        assert events is not None
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(memory_mib(service.pid)[0])
            time.sleep(0.5)
        progress = events.waiting()
        events.close()
        _, peak = memory_mib(service.pid)
        return {
            "tracked": tracked,
            "rss_end_mib": samples[-1],
            "rss_median_mib": sorted(samples)[len(samples) // 2],
            "peak_rss_mib": peak,
            "progress_events_seen": progress,
            "seconds": seconds,
        }
    finally:
        service.stop()
        service.cleanup()
        qbit.stop()


def burst(root: Path, amqp_url: str, count: int = 2000) -> dict[str, float]:
    qbit = qbittorrent(root, "memory-burst")
    qbit.start()
    service = ServiceProcess(root, amqp_url, qbit, polling={"interval_seconds": 5})
    try:
        events = service.start(binding_keys=["downloads.added"])
        assert events is not None
        idle, _ = memory_mib(service.pid)
        hashes = [secrets.token_hex(20) for _ in range(count)]
        publish_commands(amqp_url, service.names.command_exchange, hashes)
        wait_until(
            lambda: len(events.of("downloads.added")) >= count, 300, "every added", interval=0.1
        )
        time.sleep(12)  # two poll cycles with all 2,000 tracked
        rss, peak = memory_mib(service.pid)
        events.close()
        return {"commands": count, "rss_idle_mib": idle, "rss_after_mib": rss, "peak_rss_mib": peak}
    finally:
        service.stop()
        service.cleanup()
        qbit.stop()
