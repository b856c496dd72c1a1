"""Poll cost per cycle: our poller against a naive full ``torrents/info`` poll, side by side.

One qbittorrent-nox is filled with N dead magnets (random info-hashes: they wait for metadata
forever, like a big idle library) plus the tracked downloads: ``--active`` incomplete ones
(magnets) and ``--completed`` complete ones (tiny torrents added with their data in place).
Then, alternating in the same run, K cycles of

* ours: ``PollerThread.poll_once`` on a registry that tracks exactly those downloads, and
* naive: ``torrents/info`` without a filter, through qbittorrent-api, as most pollers do,

and reports qBittorrent's CPU (utime+stime of the qbittorrent-nox process) and our process's
CPU per cycle. ``idle_qbit`` is qBittorrent's CPU over windows as long as our polls with no
call at all: its own background work, which grows with N whoever polls. ``floor_qbit`` is
the cheapest question there is, ``torrents/info`` filtered to one hash: qBittorrent walks its
whole torrent list to apply any filter, so this floor grows with N for every poller. Run: ``make bench-poll`` or ``.venv/bin/python -m bench.poll_cost --sizes 1000,5000``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import qbittorrentapi
import torf

from bench.common import qbittorrent
from qbit_consumer.config import Config, PollingConfig, QbittorrentConfig
from qbit_consumer.model import Download
from qbit_consumer.qbit.client import QbitClient
from qbit_consumer.qbit.login import LoginGate
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.poller import COMPLETED_SWEEP_CYCLES, PollerThread
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State
from tests.fixtures.qbittorrent import USERNAME, QbitProcess, dead_magnets, wait_count

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def qbit_pid(process: QbitProcess) -> int:
    return process._process.pid


def make_complete_torrents(root: Path, count: int) -> list[tuple[bytes, str]]:
    """``count`` tiny torrents with their data in ``root/complete``: (torrent file, info-hash)."""
    data = root / "complete"
    data.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        name = f"done-{i}"
        (data / name).write_bytes(os.urandom(16384))
        torrent = torf.Torrent(
            path=data / name, piece_size=16384, created_by=None, creation_date=None
        )
        torrent.generate()
        made.append((torrent.dump(), str(torrent.infohash)))
    return made


def add_complete_torrents(
    client: qbittorrentapi.Client, root: Path, made: list[tuple[bytes, str]]
) -> list[str]:
    """Add them with their data in place (no check): qBittorrent seeds them at once."""
    for start in range(0, len(made), 100):
        batch = made[start : start + 100]
        client.torrents_add(
            torrent_files={f"{h}.torrent": data for data, h in batch},
            save_path=str(root / "complete"),
            is_skip_checking=True,
        )
    return [h for _, h in made]


def measure(
    size: int, active: int, made: list[tuple[bytes, str]], cycles: int, root: Path
) -> dict[str, float]:
    completed = len(made)
    process = qbittorrent(root, f"bench-{size}")
    process.start()
    try:
        client = process.client()
        tracked_active = dead_magnets(client, active)
        tracked_done = add_complete_torrents(client, root, made)
        dead_magnets(client, size - active - completed)
        wait_count(client, size)
        time.sleep(2)  # let qBittorrent settle after the adds

        cfg = Config(
            qbittorrent=QbittorrentConfig(
                url=process.url, username=USERNAME, password=process.password
            ),
            polling=PollingConfig(interval_seconds=1),
        )
        registry = Registry(State(root / f"state-{size}.sqlite3"), PublishQueue())
        for h in tracked_active + tracked_done:
            registry.track(
                [Download.added(hash=h, request_id=None, category=None, name=None, qbit_id=h)]
            )
        poller = PollerThread(cfg, registry, LoginGate())
        ours = QbitClient(cfg.qbittorrent, LoginGate())
        poller.poll_once(ours)  # first cycle marks the complete ones complete
        naive = qbittorrentapi.Client(
            host=process.url, username=USERNAME, password=process.password
        )
        naive.torrents_info()

        totals = {
            "ours_qbit": 0.0,
            "ours_self": 0.0,
            "naive_qbit": 0.0,
            "naive_self": 0.0,
            "ours_wall": 0.0,
            "naive_wall": 0.0,
            "idle_qbit": 0.0,
            "floor_qbit": 0.0,
            "floor_self": 0.0,
            "floor_wall": 0.0,
            "query_qbit": 0.0,
            "query_self": 0.0,
            "query_wall": 0.0,
        }
        # The same question as one of our cycles (every incomplete download and a 1/12 slice
        # of the complete ones), asked bare through qbittorrent-api: what qBittorrent charges
        # for it, whoever asks.
        same_question = (
            tracked_active + tracked_done[: -(-len(tracked_done) // COMPLETED_SWEEP_CYCLES)]
        )
        pid = qbit_pid(process)
        for _ in range(cycles):
            for name, run in (
                ("ours", lambda: poller.poll_once(ours)),
                ("naive", naive.torrents_info),
                ("floor", lambda: ours.torrents([tracked_active[0]])),
                ("query", lambda: naive.torrents_info(torrent_hashes=same_question)),
            ):
                q0, s0, w0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
                run()
                wall = time.perf_counter() - w0
                totals[f"{name}_wall"] += wall
                totals[f"{name}_self"] += time.process_time() - s0
                totals[f"{name}_qbit"] += cpu_seconds(pid) - q0
                time.sleep(0.2)
                if name == "ours":
                    # qBittorrent's own background work (10,000 magnets looking for peers)
                    # over a window as long as our poll took, with no call at all.
                    q0 = cpu_seconds(pid)
                    time.sleep(wall)
                    totals["idle_qbit"] += cpu_seconds(pid) - q0
                    time.sleep(0.2)
        stages = {d.stage for d in registry.snapshot()}
        assert len(registry) == active + completed and stages == {"active", "completed"}
        return {"size": size, **{k: v / cycles * 1000 for k, v in totals.items()}}
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,5000", help="torrents in qBittorrent, comma-separated"
    )
    parser.add_argument("--active", type=int, default=50, help="tracked incomplete downloads")
    parser.add_argument("--completed", type=int, default=1000, help="tracked complete downloads")
    parser.add_argument("--cycles", type=int, default=2 * COMPLETED_SWEEP_CYCLES)
    args = parser.parse_args()
    print(
        f"tracked: {args.active} incomplete + {args.completed} complete; {args.cycles} cycles each, "
        "alternating; CPU in ms per cycle (qBittorrent = qbittorrent-nox utime+stime)"
    )
    print(
        f"{'N':>6} | {'ours qB CPU':>11} | {'naive qB CPU':>12} | {'ratio':>6} | "
        f"{'ours self CPU':>13} | {'naive self CPU':>14} | {'ours wall':>9} | {'naive wall':>10} | "
        f"{'qB idle':>7} | {'1-hash floor':>12} | {'same query bare':>15}"
    )
    with tempfile.TemporaryDirectory(prefix="qbc-bench-") as tmp:
        made = make_complete_torrents(Path(tmp), args.completed)
        for size in (int(s) for s in args.sizes.split(",")):
            r = measure(size, args.active, made, args.cycles, Path(tmp))
            ratio = r["naive_qbit"] / r["ours_qbit"] if r["ours_qbit"] else float("inf")
            print(
                f"{size:>6} | {r['ours_qbit']:>11.1f} | {r['naive_qbit']:>12.1f} | {ratio:>5.0f}x | "
                f"{r['ours_self']:>13.1f} | {r['naive_self']:>14.1f} | {r['ours_wall']:>9.1f} | "
                f"{r['naive_wall']:>10.1f} | {r['idle_qbit']:>7.1f} | {r['floor_qbit']:>12.1f} | "
                f"{r['query_qbit']:>15.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
