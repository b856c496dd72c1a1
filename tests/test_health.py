"""`qbit-consumer healthcheck`: what Docker's HEALTHCHECK runs; it must really fail.

The rules it applies to the service's report are tested in-process in
tests/unit/test_health_rules.py; here, the command against a real service, and the report a
service writes when it cannot reach RabbitMQ.
"""

from __future__ import annotations

import json
import threading

import pytest

from qbit_consumer.config import load_config
from qbit_consumer.health import check_health, health_path
from qbit_consumer.service import Service
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import run_cli, write_ini


@pytest.mark.live
def test_healthy_while_running_and_unhealthy_once_stopped(qbittorrent, make_config, start_service):
    cfg = make_config(qbittorrent)
    service = start_service(cfg)
    wait_until(lambda: health_path(cfg).exists(), 10, "the health file")

    result = run_cli("healthcheck", "--config", cfg.source)
    assert (result.returncode, result.stdout) == (0, "healthy\n")
    report = json.loads(health_path(cfg).read_text())
    assert report["qbittorrent_reachable"] is True
    assert report["state_problem"] is None

    service.stop()
    result = run_cli("healthcheck", "--config", cfg.source)
    assert result.returncode == 1
    assert result.stdout == (
        f"unhealthy: {health_path(cfg)} does not exist: the service is not running (or not yet)\n"
    )


def test_a_service_that_cannot_reach_rabbitmq_becomes_unhealthy(tmp_path):
    cfg = load_config(
        write_ini(
            tmp_path / "c.ini",
            {
                "service": {"unhealthy_after_seconds": 1},
                "rabbitmq": {"url": "amqp://guest:guest@127.0.0.1:9/%2F"},
                "qbittorrent": {"url": "http://127.0.0.1:9"},
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
        [problem] = wait_until(
            lambda: [p for p in check_health(cfg) if "RabbitMQ" in p],
            10,
            "the report to say the broker connections are down",
        )
        assert problem.startswith("RabbitMQ has been unreachable for ")
        assert problem.endswith("(longer than 1 s; both connections are down)")
    finally:
        service.request_stop()
        waiter.join(15)
    assert not waiter.is_alive()
