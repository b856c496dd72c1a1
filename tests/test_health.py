"""`qbit-consumer healthcheck`: what Docker's HEALTHCHECK runs; it must really fail."""

from __future__ import annotations

import json
import threading
import time

import pytest

import qbit_consumer.health as health
from qbit_consumer.config import load_config
from qbit_consumer.health import HealthFile, check_health, fallback_health_path, health_path
from qbit_consumer.service import Service
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import run_cli, write_ini

pytestmark = pytest.mark.live


def healthcheck(cfg):
    return run_cli("healthcheck", "--config", cfg.source)


def test_healthy_while_running_and_unhealthy_once_stopped(qbittorrent, make_config, start_service):
    cfg = make_config(qbittorrent)
    service = start_service(cfg)
    wait_until(lambda: health_path(cfg).exists(), 10, "the health file")

    result = healthcheck(cfg)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "healthy"
    report = json.loads(health_path(cfg).read_text())
    assert report["qbittorrent_reachable"] is True
    assert report["state_problem"] is None

    service.stop()
    result = healthcheck(cfg)
    assert result.returncode == 1
    assert "not running" in result.stdout


def report(**changes):
    """A healthy report as the service writes it: every time on the monotonic clock."""
    now = time.monotonic()
    values = {
        "monotonic": now,
        "written_at": time.time(),
        "beats": {"consumer": now, "poller": now, "publisher": now},
        "disconnected_since": {"consumer": None, "publisher": None},
        "state_problem": None,
    }
    values.update(changes)
    return values


def write_report(cfg, **changes):
    health_path(cfg).parent.mkdir(parents=True, exist_ok=True)
    health_path(cfg).write_text(json.dumps(report(**changes)))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"monotonic": time.monotonic() - 600}, "has not reported"),
        ({"monotonic": time.monotonic() + 3600}, "before the last boot"),
        (
            {"beats": {"consumer": time.monotonic(), "poller": 0, "publisher": time.monotonic()}},
            "poller thread has been stuck",
        ),
        (
            {"disconnected_since": {"consumer": time.monotonic() - 600, "publisher": None}},
            "consumer has been disconnected from RabbitMQ",
        ),
        (
            {"state_problem": {"path": "/d/x.sqlite3", "reason": "disk full", "since": 0}},
            "the state file /d/x.sqlite3 cannot be written since",
        ),
    ],
)
def test_stale_stuck_disconnected_or_without_state_file_is_unhealthy(make_config, change, words):
    cfg = make_config(None)
    write_report(cfg, **change)
    result = healthcheck(cfg)
    assert result.returncode == 1
    assert words in result.stdout


def test_a_fresh_report_is_healthy(make_config):
    cfg = make_config(None)
    write_report(cfg)
    assert healthcheck(cfg).returncode == 0


def test_a_wall_clock_jump_does_not_make_a_fresh_report_look_stale(make_config):
    # The wall clock said 1970 when the service wrote this (a NAS without a battery, before
    # NTP): only the monotonic times count.
    cfg = make_config(None)
    write_report(cfg, written_at=0)
    result = healthcheck(cfg)
    assert result.returncode == 0, result.stdout


def test_the_report_goes_to_the_temporary_directory_when_its_own_cannot_be_written(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cfg = load_config(
        write_ini(tmp_path / "c.ini", {"state": {"path": blocker / "state.sqlite3"}}),
        environ={},
    )
    health_file = HealthFile(cfg)
    try:
        health_file.write(report(state_problem={"path": "p", "reason": "r", "since": 0}))
        assert not health_path(cfg).exists() and fallback_health_path(cfg).exists()
        problems = check_health(cfg)
        assert len(problems) == 1 and "the state file p cannot be written" in problems[0]
    finally:
        health_file.remove()
    assert not fallback_health_path(cfg).exists()


def test_the_newer_of_the_two_reports_is_believed(make_config):
    cfg = make_config(None)
    write_report(cfg, monotonic=time.monotonic() - 600)  # left behind on the broken disk
    fallback_health_path(cfg).write_text(json.dumps(report()))
    try:
        assert check_health(cfg) == []
        fallback_health_path(cfg).write_text(json.dumps(report(monotonic=0)))
        assert "has not reported" in check_health(cfg)[0]
    finally:
        fallback_health_path(cfg).unlink()


def test_a_service_that_cannot_reach_rabbitmq_becomes_unhealthy(tmp_path, monkeypatch):
    monkeypatch.setattr(health, "DISCONNECTED_SECONDS", 1.0)
    cfg = load_config(
        write_ini(
            tmp_path / "c.ini",
            {
                "rabbitmq": {"url": "amqp://guest:guest@127.0.0.1:9/%2F"},
                "state": {"path": tmp_path / "state.sqlite3"},
            },
        ),
        environ={},
    )
    service = Service(cfg)
    service.start()
    waiter = threading.Thread(target=service.wait, daemon=True)
    waiter.start()
    try:
        time.sleep(3.5)
        problems = health.check_health(cfg)
        assert any("disconnected from RabbitMQ" in p for p in problems), problems
    finally:
        service.request_stop()
        waiter.join(15)
