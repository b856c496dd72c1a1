"""Command path: throughput against a raw qbittorrent-api add loop, and latency at light load.

Throughput: N commands in 4 rounds; each round's commands are published at once and timed
from the first publish to the last of their `downloads.added` events (each one confirmed by
the broker, the torrent listed by qBittorrent, the download registered in the state file),
against a plain loop that adds the same magnets to another fresh qbittorrent-nox with one
`torrents_add` call each (no confirmation of any kind), run in alternation with ours. Latency: commands sent 200 ms apart, publish -> `added` event.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import statistics
import time
from pathlib import Path

from bench.common import ServiceProcess, cpu_seconds, memory_mib, publish_commands, qbittorrent
from tests.fixtures.qbittorrent import USERNAME
from tests.fixtures.rabbitmq import BrokerHelper, wait_until


def throughput(
    root: Path, amqp_url: str, count: int = 2000, prefetch: int = 10, rounds: int = 4
) -> dict[str, float]:
    """Alternating rounds of ``count / rounds`` commands: the raw loop, then ours, and so on,
    so that both sides see the same machine (noisy here) and equally full qBittorrents. The
    service is frozen (SIGSTOP) while the raw loop runs, so its poller does not slow it."""
    hashes = [secrets.token_hex(20) for _ in range(count)]
    raw_qb, our_qb = (
        qbittorrent(root, f"raw-loop-{prefetch}"),
        qbittorrent(root, f"service-{prefetch}"),
    )
    raw_qb.start()
    our_qb.start()
    service = ServiceProcess(
        root,
        amqp_url,
        our_qb,
        polling={"interval_seconds": 5},
        rabbitmq={"prefetch_count": prefetch},
    )
    try:
        import qbittorrentapi

        client = qbittorrentapi.Client(host=raw_qb.url, username=USERNAME, password=raw_qb.password)
        client.auth_log_in()
        events = service.start(binding_keys=["downloads.added"])
        assert events is not None
        cpu = 0.0
        raw_seconds = ours_seconds = published_seconds = 0.0
        per_round = count // rounds
        for n in range(rounds):
            part = hashes[n * per_round : (n + 1) * per_round]
            os.kill(service.pid, signal.SIGSTOP)
            started = time.perf_counter()
            for infohash in part:
                client.torrents_add(urls=f"magnet:?xt=urn:btih:{infohash}", category="tv")
            raw_seconds += time.perf_counter() - started
            os.kill(service.pid, signal.SIGCONT)

            cpu_before = cpu_seconds(service.pid)
            started = time.perf_counter()
            publish_commands(amqp_url, service.names.command_exchange, part)
            published_seconds += time.perf_counter() - started
            wait_until(
                lambda n=n: len(events.of("downloads.added")) >= (n + 1) * per_round,
                300,
                "every added event",
                interval=0.02,
            )
            ours_seconds += time.perf_counter() - started
            cpu += cpu_seconds(service.pid) - cpu_before
        done = rounds * per_round
        added = {e["hash"] for e in events.of("downloads.added")}
        assert added == set(hashes[:done])
        rss, peak = memory_mib(service.pid)
        figures = {
            "commands": done,
            "rounds": rounds,
            "prefetch_count": prefetch,
            "ours_per_second": done / ours_seconds,
            "publishing_seconds": published_seconds,
            "raw_loop_per_second": done / raw_seconds,
            "ratio": raw_seconds / ours_seconds,
            "ours_service_cpu_ms_per_command": cpu / done * 1000,
            "ours_peak_rss_mib": peak,
            "ours_rss_mib": rss,
        }
        events.close()
        return figures
    finally:
        with contextlib.suppress(ProcessLookupError, AssertionError):
            os.kill(service.pid, signal.SIGCONT)
        service.stop()
        service.cleanup()
        raw_qb.stop()
        our_qb.stop()


def latency(root: Path, amqp_url: str, count: int = 60) -> dict[str, float]:
    qbit = qbittorrent(root, "latency")
    qbit.start()
    service = ServiceProcess(root, amqp_url, qbit)
    try:
        events = service.start()
        helper = BrokerHelper(amqp_url)
        lags = []
        for _ in range(count):
            infohash = secrets.token_hex(20)
            sent = time.time()
            helper.publish(
                service.names.command_exchange,
                "downloads.add",
                json.dumps(
                    {"magnet": f"magnet:?xt=urn:btih:{infohash}", "category": "tv"}
                ).encode(),
            )
            wait_until(
                lambda h=infohash: events.of("downloads.added", hash=h), 10, "added", interval=0.002
            )
            lags.append(time.time() - sent)
            time.sleep(0.2)
        helper.close()
        events.close()
        lags.sort()
        return {
            "commands": count,
            "p50_ms": statistics.median(lags) * 1000,
            "p95_ms": lags[int(0.95 * (len(lags) - 1))] * 1000,
            "max_ms": lags[-1] * 1000,
        }
    finally:
        service.stop()
        service.cleanup()
        qbit.stop()
