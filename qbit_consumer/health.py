"""Liveness for Docker's HEALTHCHECK, without an HTTP endpoint.

The running service's main thread writes a small JSON file next to the state file every few
seconds: when each thread last went round its loop (its ``rounds`` changed), whether the broker
connections are up, and whether the state file can be written. ``qbit-consumer healthcheck``
reads it and exits 1 when the file is stale (the process is gone or its main loop is stuck),
when a thread has not gone round its loop for too long (stuck in a call), when a broker
connection has been down for longer than ``[service] unhealthy_after_seconds``, or when the
state file cannot be written.

Every duration is measured on ``time.monotonic()``: on Linux that clock is system-wide, so
the healthcheck (another process) can compare with it, and a jump of the wall clock (NTP, a
NAS without a battery) cannot make a healthy service look stuck. ``written_at`` is wall-clock
time, only for people reading the file.

The health file lives on the state file's disk, which is broken exactly when the check has
most to say; when it cannot be written, the report goes to a file in the temporary directory
instead, and the check reads both and believes the newer.

A qBittorrent outage does not make the service unhealthy: restarting it would not help, and it
already reports the outage (``downloads.polling_failed``) and holds commands back.
A qBittorrent that answers but refuses us (a refused login, 403 Forbidden: a wrong password,
our IP banned, a proxy) does make it unhealthy, with the reason: it needs a person to look.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from qbit_consumer.config import Config
from qbit_consumer.threads import CONSUMER, POLLER, PUBLISHER

log = logging.getLogger(__name__)

#: How often the running service writes the file.
WRITE_EVERY_SECONDS: Final = 2.0
#: The file itself may be this old.
FILE_STALE_SECONDS: Final = 30.0


def health_path(cfg: Config) -> Path:
    return cfg.state.path.with_name(cfg.state.path.stem + ".health.json")


def fallback_health_path(cfg: Config) -> Path:
    """Named after the state file's path, so that two services on one machine (each with its
    own state file) never read each other's report."""
    digest = hashlib.sha256(os.path.abspath(cfg.state.path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"qbit-consumer-{digest}.health.json"


def loop_limits(cfg: Config) -> dict[str, float]:
    """How long each thread may go without a round of its loop: longer than its slowest
    legitimate wait (a command's qBittorrent calls, a poll of a slow qBittorrent)."""
    slow_qbit = 4 * cfg.qbittorrent.timeout_seconds + 20
    return {
        CONSUMER: 60 + slow_qbit,
        POLLER: 3 * cfg.polling.interval_seconds + 2 * slow_qbit,
        PUBLISHER: 90.0,
    }


class HealthFile:
    """Writes the report next to the state file, or in the temporary directory while that
    cannot be written (saying so once, not every two seconds)."""

    def __init__(self, cfg: Config) -> None:
        self.path = health_path(cfg)
        self.fallback = fallback_health_path(cfg)
        self._in_fallback = False

    def write(self, report: dict[str, Any]) -> None:
        text = json.dumps(report)
        try:
            _write_atomically(self.path, text)
        except OSError as exc:
            if not self._in_fallback:
                log.warning(
                    "cannot write the health file %s (%s): writing %s until it can be written",
                    self.path,
                    exc.strerror,
                    self.fallback,
                )
                self._in_fallback = True
            try:
                _write_atomically(self.fallback, text)
            except OSError as fallback_exc:
                log.warning("cannot write the health file %s: %s", self.fallback, fallback_exc)
            return
        if self._in_fallback:
            self._in_fallback = False
            with contextlib.suppress(OSError):
                self.fallback.unlink()

    def remove(self) -> None:
        for path in (self.path, self.fallback):
            with contextlib.suppress(OSError):
                path.unlink()


def _write_atomically(path: Path, text: str) -> None:
    """A reader never sees half a file. A temporary name of its own (O_EXCL, random) because
    the fallback lives in a directory anyone may write to."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _broker_problem(report: dict[str, Any], now: float, limit: float) -> str | None:
    """One sentence for the connections down longer than ``limit``: both down is RabbitMQ
    unreachable, one alone is that connection's trouble."""
    since = report.get("disconnected_since", {})
    down = {
        name: now - float(since[name])
        for name in (CONSUMER, PUBLISHER)
        if since.get(name) is not None and now - float(since[name]) > limit
    }
    if len(down) == 2:
        return (
            f"RabbitMQ has been unreachable for {min(down.values()):.0f} s "
            f"(longer than {limit:g} s; both connections are down)"
        )
    for name, seconds in down.items():
        return f"the {name}'s connection to RabbitMQ has been down for {seconds:.0f} s"
    return None


def check_health(cfg: Config, now: float | None = None) -> list[str]:
    """Problems found; an empty list means healthy. ``now`` is on ``time.monotonic()``."""
    now = time.monotonic() if now is None else now
    path = health_path(cfg)
    reports: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for candidate in (path, fallback_health_path(cfg)):
        try:
            reports.append(json.loads(candidate.read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            unreadable.append(f"{candidate} cannot be read: {exc}")
    if not reports:
        return unreadable or [f"{path} does not exist: the service is not running (or not yet)"]
    report = max(reports, key=lambda r: float(r.get("monotonic", 0)))
    problems = []
    age = now - float(report.get("monotonic", 0))
    if age < 0:
        # Written before the machine restarted (the clock starts again at boot).
        problems.append("the health file is from before the last boot: the service is not running")
    elif age > FILE_STALE_SECONDS:
        problems.append(f"the service has not reported for {age:.0f} s (stopped or stuck)")
    for thread, limit in loop_limits(cfg).items():
        quiet = now - float(report.get("beats", {}).get(thread, 0))
        if quiet > limit:
            problems.append(f"the {thread} thread has been stuck for {quiet:.0f} s")
    if broker := _broker_problem(report, now, cfg.service.unhealthy_after_seconds):
        problems.append(broker)
    state = report.get("state_problem")
    if state is not None:
        problems.append(
            f"the state file {state['path']} cannot be written since "
            f"{now - float(state['since']):.0f} s: {state['reason']}; "
            "commands wait in their queue"
        )
    refuses = report.get("qbittorrent_refuses")  # the login gate's shut_reason()
    if refuses:
        problems.append(f"qBittorrent refuses us: {refuses}")
    return problems
