"""`qbit-consumer healthcheck`: what Docker's HEALTHCHECK runs; it must really fail."""

from __future__ import annotations

import json
import time

import pytest

from qbit_consumer.health import health_path
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

    service.stop()
    result = healthcheck(cfg)
    assert result.returncode == 1
    assert "not running" in result.stdout


def write_report(cfg, **changes):
    now = time.time()
    report = {
        "written_at": now,
        "beats": {"consumer": now, "poller": now, "publisher": now},
        "disconnected_since": {"consumer": None, "publisher": None},
    }
    report.update(changes)
    health_path(cfg).parent.mkdir(parents=True, exist_ok=True)
    health_path(cfg).write_text(json.dumps(report))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"written_at": 0}, "has not reported"),
        (
            {"beats": {"consumer": time.time(), "poller": 0, "publisher": time.time()}},
            "poller thread has been stuck",
        ),
        (
            {"disconnected_since": {"consumer": time.time() - 600, "publisher": None}},
            "consumer has been disconnected from RabbitMQ",
        ),
    ],
)
def test_stale_stuck_or_disconnected_is_unhealthy(make_config, change, words):
    cfg = make_config(None)
    write_report(cfg, **change)
    result = healthcheck(cfg)
    assert result.returncode == 1
    assert words in result.stdout


def test_a_fresh_report_is_healthy(make_config):
    cfg = make_config(None)
    write_report(cfg)
    assert healthcheck(cfg).returncode == 0


def test_a_service_that_cannot_reach_rabbitmq_becomes_unhealthy(tmp_path, monkeypatch):
    import qbit_consumer.health as health

    monkeypatch.setattr(health, "DISCONNECTED_SECONDS", 1.0)
    from qbit_consumer.config import load_config
    from qbit_consumer.service import Service

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
    waiter = __import__("threading").Thread(target=service.wait, daemon=True)
    waiter.start()
    try:
        time.sleep(3.5)
        problems = health.check_health(cfg)
        assert any("disconnected from RabbitMQ" in p for p in problems), problems
    finally:
        service.request_stop()
        waiter.join(15)
