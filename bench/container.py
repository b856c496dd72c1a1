"""`make bench-container`: the image as a NAS runs it, measured in one run.

* the image's size, and how much of it is this project's own layer;
* what one health probe costs inside the running container (Docker runs one every 30 s), side
  by side with the same probe carrying pika, requests and qbittorrent-api as it did before it
  was made lean; and the whole `podman healthcheck run` as the engine runs it;
* the container's memory with 10,000 tracked downloads, all incomplete (a progress event for
  each, every cycle), under the compose example's `--memory 128m`: the cgroup's figures (what
  the limit is checked against) beside the process's own RSS;
* `stop` with those 10,000 tracked: seconds, exit code.

Writes docs/benchmarks-container.md and bench/results-container.json.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, qbittorrent
from tests.fixtures.container import (
    Containers,
    build_image,
    config_dir,
    container_engine,
    data_dir,
    mounts,
    tracked_library,
)
from tests.fixtures.rabbitmq import BrokerHelper, TestVhost, wait_until
from tests.fixtures.service import TestNames

PROBES = 20
TRACKED = 10_000
SECONDS = 30

#: Runs inside the container: each probe as a child of its own, timed, with its peak RSS from
#: the kernel's accounting of that child alone (wait4), its output sent nowhere.
_DRIVER = r"""
import json, os, sys, time
CONFIG = ["healthcheck", "--config", "/config/config.ini"]
MAIN = "import sys; {}from qbit_consumer.cli.main import main; sys.exit(main(sys.argv[1:]))"
KINDS = {
    "script": ["qbit-consumer", *CONFIG],
    "lean": ["python3", "-c", MAIN.format(""), *CONFIG],
    "loaded": [
        "python3", "-c",
        MAIN.format("import qbit_consumer.broker, qbit_consumer.qbit.client; "), *CONFIG,
    ],
}
quiet = [(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)]
rows = {kind: [] for kind in KINDS}
for _ in range(int(sys.argv[1])):
    for kind, argv in KINDS.items():  # interleaved: the machine's noise falls on all alike
        start = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=quiet)
        _, status, usage = os.wait4(pid, 0)
        rows[kind].append(
            [time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]
        )
print(json.dumps(rows))
"""


def image_sizes(engine: str, image: str) -> dict[str, float]:
    def size(name: str) -> int:
        done = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Size}}", name],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(done.stdout.strip())

    base = next(
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.upper().startswith("FROM ")
    )
    total, under = size(image), size(base)
    return {"total_mb": total / 1e6, "base_mb": under / 1e6, "ours_mb": (total - under) / 1e6}


def health_probes(containers: Containers, config: Path, data: Path) -> dict[str, Any]:
    container = containers.new().run(*mounts(config, data))
    container.wait_for_log("consuming commands")
    wait_until(lambda: container.healthcheck()[0] == 0, 30, "a healthy container")
    done = container.engine_call(
        "exec", container.name, "python3", "-c", _DRIVER, str(PROBES), timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    result: dict[str, Any] = {}
    for kind, samples in rows.items():
        assert {code for _, _, code in samples} == {0}, f"{kind} probes said unhealthy"
        result[kind] = {
            "median_s": statistics.median(s for s, _, _ in samples),
            "max_s": max(s for s, _, _ in samples),
            "peak_rss_mib": max(m for _, m, _ in samples),
        }
    engine_runs = []
    for _ in range(10):
        start = time.monotonic()
        code, _ = container.healthcheck()
        engine_runs.append(time.monotonic() - start)
        assert code == 0
    result["engine_healthcheck_run_median_s"] = statistics.median(engine_runs)
    result["probes"] = PROBES
    container.stop()
    return result


def tracked_memory(
    containers: Containers, root: Path, amqp_url: str, names: TestNames
) -> dict[str, Any]:
    library = qbittorrent(root, "container-library")
    library.start()
    try:
        data = data_dir(root, name="data-tracked")
        tracked_library(library, data, TRACKED)
        (root / "tracked").mkdir()
        config = config_dir(
            root / "tracked",
            amqp_url,
            names,
            library.url,
            library.password,
            service={"status_interval_seconds": 5},
        )
        container = containers.new().run("--memory", "128m", *mounts(config, data))
        container.wait_for_log("consuming commands", 60)
        samples, rss = [], []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            samples.append(container.memory())
            rss.append(_rss_mib(container.pid()))
            time.sleep(0.5)
        memory = container.memory()
        healthy = container.healthcheck()
        reader = BrokerHelper(amqp_url)
        [(_, body)] = reader.get_all(names.status_queue)
        reader.close()
        status = json.loads(body)
        code, seconds = container.stop()
        return {
            "tracked": TRACKED,
            "seconds": SECONDS,
            "limit_mib": memory.limit / 2**20,
            "cgroup_peak_mib": memory.peak / 2**20,
            "cgroup_working_set_peak_mib": max(s.working_set for s in samples) / 2**20,
            "cgroup_usage_end_mib": memory.usage / 2**20,
            "process_rss_peak_mib": max(rss),
            "process_rss_end_mib": rss[-1],
            "oom_kills": memory.oom_kills,
            "healthy": healthy == (0, "healthy"),
            "stop_seconds": seconds,
            "stop_exit_code": code,
            "status": status,
        }
    finally:
        library.stop()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def render(r: dict[str, Any]) -> str:
    h, m, size = r["healthcheck"], r["memory"], r["image"]
    lean, loaded, script = h["lean"], h["loaded"], h["script"]
    status = json.dumps(m["status"], indent=2)
    return f"""# Benchmarks: the container

Measured by `make bench-container` ({r["machine"]}; {r["engine"]};
qBittorrent {r["qbittorrent"]}; {r["date"]}; {r["total_seconds"]:.0f} s). Rerun it on a quiet
machine (`ps` first): it writes this page and `bench/results-container.json`.

## The image

| | MB |
|---|---:|
| the image (`qbit-consumer:test`, built from the work tree) | {size["total_mb"]:.1f} |
| the base it starts `FROM` | {size["base_mb"]:.1f} |
| **this project's layer** (the package and its dependencies) | **{size["ours_mb"]:.1f}** |

On these machines the base is a stand-in made from Debian's packages (nothing can be pulled);
the real `python:3.11-slim` is smaller (about 130 MB), and the layer on top is the same.

## A health probe

{h["probes"]} probes of each kind, run one after another inside the running container (a
healthy service with its report in `/data`), each its own process timed from spawn to exit,
its peak RSS as the kernel counted it:

| probe | median | slowest | peak RSS |
|---|---:|---:|---:|
| `qbit-consumer healthcheck`, what the image's HEALTHCHECK runs | **{script["median_s"]:.3f} s** | {script["max_s"]:.3f} s | **{script["peak_rss_mib"]:.1f} MiB** |
| the same command through `python3 -c` | {lean["median_s"]:.3f} s | {lean["max_s"]:.3f} s | {lean["peak_rss_mib"]:.1f} MiB |
| the same, with pika, requests and qbittorrent-api imported first (the probe before it was made lean) | {loaded["median_s"]:.3f} s | {loaded["max_s"]:.3f} s | {loaded["peak_rss_mib"]:.1f} MiB |
| ratio, lean against loaded | {loaded["median_s"] / lean["median_s"]:.1f}x faster | | {loaded["peak_rss_mib"] / lean["peak_rss_mib"]:.1f}x less |

Goal: at most 0.3 s and 25 MB a probe. The whole `podman healthcheck run` (the engine starts
an exec session, then the probe): median {h["engine_healthcheck_run_median_s"]:.3f} s.

## 10,000 tracked downloads under `--memory 128m`

{m["tracked"]:,} downloads tracked, all incomplete (dead magnets in a qBittorrent of their own):
every 5 s cycle asks about each and publishes a progress event for each. Sampled every 0.5 s
for {m["seconds"]} s, from the host.

| | MiB |
|---|---:|
| the container's memory limit | {m["limit_mib"]:.0f} |
| cgroup peak (`memory.max_usage_in_bytes`: page cache included, since the start) | **{m["cgroup_peak_mib"]:.1f}** |
| cgroup working set, peak (usage less inactive page cache: what `docker stats` shows) | {m["cgroup_working_set_peak_mib"]:.1f} |
| cgroup usage at the end | {m["cgroup_usage_end_mib"]:.1f} |
| the service's own RSS, peak / at the end | {m["process_rss_peak_mib"]:.1f} / {m["process_rss_end_mib"]:.1f} |

The process's RSS can be above the cgroup's figure: RSS counts every page it maps, the shared
libraries of the image included, while the cgroup is charged only for the pages it brought into
memory itself (a library page read first by an earlier container stays charged to that one).
The limit is checked against the cgroup's.

OOM kills: {m["oom_kills"]}; healthy at the end: {"yes" if m["healthy"] else "NO"};
`stop` with all of it tracked: exit {m["stop_exit_code"]} after {m["stop_seconds"]:.1f} s.

Its last `downloads.status` (the last poll took {m["status"]["last_poll"]["seconds"]} s: 10,000
incomplete downloads are 50 `torrents/info` calls and 10,000 progress events a cycle):

```json
{status}
```
"""


def main() -> None:
    started = time.monotonic()
    engine = container_engine()
    image = build_image(engine)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, "
        f"{__import__('os').cpu_count()} cores, Python {sys.version.split()[0]}",
        "engine": subprocess.run(
            [engine, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    containers = Containers(engine, image)
    with tempfile.TemporaryDirectory(prefix="qbc-bench-") as tmp, TestVhost() as amqp_url:
        root = Path(tmp)
        results["image"] = image_sizes(engine, image)
        qbit = qbittorrent(root, "container-probe")
        qbit.start()
        results["qbittorrent"] = qbit.version
        names = TestNames()
        try:
            config = config_dir(root, amqp_url, names, qbit.url, qbit.password)
            results["healthcheck"] = health_probes(containers, config, data_dir(root))
            results["memory"] = tracked_memory(containers, root, amqp_url, names)
        finally:
            containers.remove_all()
            qbit.stop()
    results["total_seconds"] = time.monotonic() - started
    (ROOT / "bench" / "results-container.json").write_text(json.dumps(results, indent=2))
    (ROOT / "docs" / "benchmarks-container.md").write_text(render(results))
    print(json.dumps({k: v for k, v in results.items() if k != "memory"}, indent=2))
    print(json.dumps({k: v for k, v in results["memory"].items() if k != "status"}, indent=2))


if __name__ == "__main__":
    main()
