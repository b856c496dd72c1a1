"""`make bench`: every benchmark, side by side with its baseline, in one run (under 10 minutes).

Writes bench/results.json, docs/bench-poll-cost.png and docs/benchmarks.md; on another
qBittorrent than the default (QBIT_CONSUMER_BENCH_QBITTORRENT), docs/benchmarks-qbittorrent-
<version>.md and its plot.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    backpressure,
    command_path,
    completion_latency,
    history,
    memory,
    poll_cost,
    report,
)
from bench.common import QBITTORRENT_VERSION, ROOT
from tests.fixtures.rabbitmq import TestVhost


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(sizes, [r["naive_qbit"] for r in rows], "o-", label="naive: full torrents/info")
    ax.plot(sizes, [r["ours_qbit"] for r in rows], "s-", label="qbit-consumer")
    ax.plot(
        sizes,
        [r["floor_qbit"] for r in rows],
        "^--",
        label="floor: torrents/info filtered to 1 hash",
    )
    for r in rows:
        ax.annotate(
            f"{r['naive_qbit'] / r['ours_qbit']:.0f}x",
            (r["size"], r["naive_qbit"]),
            textcoords="offset points",
            xytext=(-10, 8),
        )
    ax.set_xlabel("torrents in qBittorrent (50 tracked incomplete + 1,000 tracked complete)")
    ax.set_ylabel("qBittorrent CPU per poll cycle (ms)")
    ax.set_title("Poll cost per cycle, measured side by side")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    started = time.monotonic()
    results: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {sys.version.split()[0]}",
        "qbittorrent": QBITTORRENT_VERSION,
    }
    with tempfile.TemporaryDirectory(prefix="qbc-bench-") as tmp, TestVhost() as amqp_url:
        root = Path(tmp)
        step = lambda name: print(f"[{time.monotonic() - started:5.0f} s] {name}", flush=True)  # noqa: E731
        step("poll cost at 1,000 / 5,000 / 10,000 torrents")
        made = poll_cost.make_complete_torrents(root, 1000)
        results["poll_cost"] = [
            poll_cost.measure(n, 50, made, 24, root) for n in (1000, 5000, 10000)
        ]
        step("command path: throughput against a raw add loop (default prefetch 10, and 200)")
        results["throughput"] = command_path.throughput(root, amqp_url, 2000)
        results["throughput_prefetch_200"] = command_path.throughput(
            root, amqp_url, 2000, prefetch=200
        )
        step("command path: latency at light load")
        results["latency"] = command_path.latency(root, amqp_url, 60)
        step("memory: 10,000 tracked downloads, 50 of them incomplete")
        results["memory_tracked"] = memory.tracked_steady_state(
            root, amqp_url, 10_000, 30, active=50
        )
        step("memory: 10,000 tracked downloads, all incomplete (the worst case)")
        results["memory_tracked_all_active"] = memory.tracked_steady_state(
            root, amqp_url, 10_000, 30
        )
        step("memory: a burst of 2,000 commands")
        results["memory_burst"] = memory.burst(root, amqp_url, 2000)
        step("history: history --hash and --since over a stream of 100,000 events")
        results["history_read"] = history.read_back(root, amqp_url, 100_000)
        step("history: rebuilding 10,000 tracked downloads after the state file was lost")
        results["history_recovery"] = history.recovery(root, amqp_url, 10_000, 10_000)
        step("backpressure: the broker away for 60 s")
        results["backpressure"] = backpressure.broker_away(root, amqp_url, 1000, 60)
        step("backpressure: the broker blocking publishers (memory alarm) for 60 s")
        results["backpressure_blocked"] = backpressure.broker_blocked(root, amqp_url, 1000, 60)
    step("completion latency: 5 real downloads")
    results["completion"] = completion_latency.measure(5, 1.0, 4)
    results["total_seconds"] = time.monotonic() - started
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    write_pages(results)
    print(json.dumps(results, indent=2))


def write_pages(results: dict[str, object]) -> None:
    plot_name = report.write_page(results)
    plot(results["poll_cost"], ROOT / "docs" / plot_name)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
