"""Liveness for Docker's HEALTHCHECK, without an HTTP endpoint.

The running service's main thread writes a small JSON file next to the state file every few
seconds: when each thread last went round its loop, and whether the broker connections are
up. ``qbit-consumer healthcheck`` reads it and exits 1 when the file is stale (the process is
gone or its main loop is stuck), when a thread has not gone round its loop for too long (stuck
in a call), or when a broker connection has been down for too long.

A qBittorrent outage does not make the service unhealthy: restarting it would not help, and it
already reports the outage (``downloads.polling_failed``) and holds commands back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Final

from qbit_consumer.config import Config

#: How often the running service writes the file.
WRITE_EVERY_SECONDS: Final = 2.0
#: The file itself may be this old.
FILE_STALE_SECONDS: Final = 30.0
#: A broker connection may be down this long before the service counts as unhealthy.
DISCONNECTED_SECONDS: Final = 90.0


def health_path(cfg: Config) -> Path:
    return cfg.state.path.with_name(cfg.state.path.stem + ".health.json")


def loop_limits(cfg: Config) -> dict[str, float]:
    """How long each thread may go without a round of its loop: longer than its slowest
    legitimate wait (a command's qBittorrent calls, a poll of a slow qBittorrent)."""
    slow_qbit = 4 * cfg.qbittorrent.timeout_seconds + 20
    return {
        "consumer": 60 + slow_qbit,
        "poller": 3 * cfg.polling.interval_seconds + 2 * slow_qbit,
        "publisher": 90.0,
    }


def write_health(path: Path, report: dict[str, Any]) -> None:
    """Atomic: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report), encoding="utf-8")
    os.replace(tmp, path)


def check_health(cfg: Config, now: float | None = None) -> list[str]:
    """Problems found; an empty list means healthy."""
    now = time.time() if now is None else now
    path = health_path(cfg)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{path} does not exist: the service is not running (or not yet)"]
    except (OSError, ValueError) as exc:
        return [f"{path} cannot be read: {exc}"]
    problems = []
    age = now - float(report.get("written_at", 0))
    if age > FILE_STALE_SECONDS:
        problems.append(f"the service has not reported for {age:.0f} s (stopped or stuck)")
    for thread, limit in loop_limits(cfg).items():
        quiet = now - float(report.get("beats", {}).get(thread, 0))
        if quiet > limit:
            problems.append(f"the {thread} thread has been stuck for {quiet:.0f} s")
    for connection in ("consumer", "publisher"):
        since = report.get("disconnected_since", {}).get(connection)
        if since is not None and now - float(since) > DISCONNECTED_SECONDS:
            problems.append(
                f"the {connection} has been disconnected from RabbitMQ for "
                f"{now - float(since):.0f} s"
            )
    return problems
