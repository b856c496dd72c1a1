"""What the healthcheck decides from the running service's report (``check_health``), and where
the report is written (``HealthFile``): in-process, at a monotonic time the test chooses.

The ``healthcheck`` command itself (its exit code and output) runs against a real service in
tests/test_health.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qbit_consumer.config import Config, load_config
from qbit_consumer.health import (
    FILE_STALE_SECONDS,
    HealthFile,
    check_health,
    fallback_health_path,
    health_path,
    loop_limits,
)
from qbit_consumer.threads import CONSUMER, POLLER, PUBLISHER
from tests.fixtures.service import write_ini

#: When the report was written, on the monotonic clock; each test checks it at NOW or later.
NOW = 50_000.0


def config(tmp_path: Path, state_path: Path) -> Config:
    return load_config(write_ini(tmp_path / "c.ini", {"state": {"path": state_path}}), environ={})


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[Config]:
    cfg = config(tmp_path, tmp_path / "state.sqlite3")
    yield cfg
    HealthFile(cfg).remove()  # the fallback is in the temporary directory, shared by everyone


def report(**changes: Any) -> dict[str, Any]:
    """A healthy report as the service writes it at NOW: every thread went round its loop
    then, both broker connections up, the state file writable, qBittorrent not refusing us."""
    values: dict[str, Any] = {
        "monotonic": NOW,
        "written_at": 1.7e9,
        "beats": {CONSUMER: NOW, POLLER: NOW, PUBLISHER: NOW},
        "disconnected_since": {CONSUMER: None, PUBLISHER: None},
        "state_problem": None,
        "qbittorrent_refuses": None,
    }
    values.update(changes)
    return values


def write(cfg: Config, **changes: Any) -> None:
    HealthFile(cfg).write(report(**changes))


def test_without_a_report_the_service_is_not_running(cfg):
    assert check_health(cfg, now=NOW) == [
        f"{health_path(cfg)} does not exist: the service is not running (or not yet)"
    ]


def test_a_report_is_fresh_up_to_its_age_limit_and_stale_after_it(cfg):
    write(cfg)
    assert check_health(cfg, now=NOW) == []
    assert check_health(cfg, now=NOW + FILE_STALE_SECONDS) == []
    assert check_health(cfg, now=NOW + FILE_STALE_SECONDS + 1) == [
        f"the service has not reported for {FILE_STALE_SECONDS + 1:.0f} s (stopped or stuck)"
    ]


def test_a_report_from_before_the_last_boot_is_not_a_running_service(cfg):
    # The monotonic clock starts again at boot: a report "from the future" is from before it.
    write(cfg, monotonic=NOW + 3600)
    assert check_health(cfg, now=NOW) == [
        "the health file is from before the last boot: the service is not running"
    ]


def test_a_wall_clock_jump_does_not_make_a_fresh_report_look_stale(cfg):
    # The wall clock said 1970 when the service wrote this (a NAS without a battery, before
    # NTP): only the monotonic times count.
    write(cfg, written_at=0)
    assert check_health(cfg, now=NOW + 1) == []


@pytest.mark.parametrize("thread", [CONSUMER, POLLER, PUBLISHER])
def test_a_thread_is_stuck_once_its_loop_has_not_gone_round_for_longer_than_its_limit(cfg, thread):
    limit = loop_limits(cfg)[thread]
    now = NOW + 10  # the report itself is fresh
    write(cfg, beats={**report()["beats"], thread: now - limit})
    assert check_health(cfg, now=now) == []
    write(cfg, beats={**report()["beats"], thread: now - limit - 1})
    assert check_health(cfg, now=now) == [
        f"the {thread} thread has been stuck for {limit + 1:.0f} s"
    ]


@pytest.mark.parametrize("connection", [CONSUMER, PUBLISHER])
def test_a_broker_connection_down_for_longer_than_its_limit_is_unhealthy(cfg, connection):
    limit = cfg.service.unhealthy_after_seconds
    down = {CONSUMER: None, PUBLISHER: None}
    write(cfg, disconnected_since={**down, connection: NOW - limit})
    assert check_health(cfg, now=NOW) == []  # a broker restart, not yet a problem
    write(cfg, disconnected_since={**down, connection: NOW - limit - 1})
    assert check_health(cfg, now=NOW) == [
        f"the {connection}'s connection to RabbitMQ has been down for {limit + 1:.0f} s"
    ]


def test_both_connections_down_past_the_configured_limit_is_one_sentence_rabbitmq_unreachable(
    tmp_path,
):
    cfg = load_config(
        write_ini(
            tmp_path / "c.ini",
            {"state": {"path": tmp_path / "s.sqlite3"}, "service": {"unhealthy_after_seconds": 5}},
        ),
        environ={},
    )
    try:
        write(cfg, disconnected_since={CONSUMER: NOW - 5, PUBLISHER: NOW - 4})
        assert check_health(cfg, now=NOW) == []
        write(cfg, disconnected_since={CONSUMER: NOW - 7, PUBLISHER: NOW - 6})
        assert check_health(cfg, now=NOW) == [
            "RabbitMQ has been unreachable for 6 s (longer than 5 s; both connections are down)"
        ]
    finally:
        HealthFile(cfg).remove()


def test_a_state_file_that_cannot_be_written_is_unhealthy(cfg):
    write(cfg, state_problem={"path": "/d/x.sqlite3", "reason": "disk full", "since": NOW - 12})
    assert check_health(cfg, now=NOW) == [
        "the state file /d/x.sqlite3 cannot be written since 12 s: disk full; "
        "commands wait in their queue"
    ]


def test_a_qbittorrent_that_refuses_us_is_unhealthy_with_the_reason(cfg):
    reason = "qBittorrent answered 403 Forbidden (2 time(s) in a row); next attempt in 50 s"
    write(cfg, qbittorrent_refuses=reason)
    assert check_health(cfg, now=NOW) == [f"qBittorrent refuses us: {reason}"]


def test_an_unreadable_report_is_unhealthy_naming_the_file(cfg):
    health_path(cfg).write_text("{half a rep")
    [problem] = check_health(cfg, now=NOW)
    assert problem.startswith(f"{health_path(cfg)} cannot be read: ")


def test_the_report_goes_to_the_temporary_directory_when_its_own_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cfg = config(tmp_path, blocker / "state.sqlite3")
    health_file = HealthFile(cfg)
    try:
        health_file.write(report(state_problem={"path": "p", "reason": "r", "since": NOW}))
        assert not health_path(cfg).exists() and fallback_health_path(cfg).exists()
        [problem] = check_health(cfg, now=NOW)
        assert problem.startswith("the state file p cannot be written")
    finally:
        health_file.remove()
    assert not fallback_health_path(cfg).exists()


def test_the_newer_of_the_two_reports_is_believed(cfg):
    # Left behind on the broken disk, and the fallback written since.
    health_path(cfg).write_text(json.dumps(report(monotonic=NOW - 600)))
    fallback_health_path(cfg).write_text(json.dumps(report()))
    assert check_health(cfg, now=NOW) == []
    fallback_health_path(cfg).write_text(json.dumps(report(monotonic=NOW - 700)))
    assert check_health(cfg, now=NOW) == [
        "the service has not reported for 600 s (stopped or stuck)"
    ]
