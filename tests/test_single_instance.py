"""One process per state file: a second `run` on it stops at once, naming the one that has it."""

from __future__ import annotations

import signal

import pytest

from tests.fixtures.service import run_cli, service_ini, spawn_service

pytestmark = pytest.mark.live


def test_a_second_run_on_the_same_state_file_exits_1_naming_the_first(
    tmp_path, amqp_url, names, qbittorrent, broker
):
    config = service_ini(
        tmp_path / "config.ini", amqp_url, names, qbittorrent.url, qbittorrent.password
    )
    state = tmp_path / "state.sqlite3"
    first = spawn_service(config, tmp_path / "first.log")
    try:
        assert first.poll() is None, (tmp_path / "first.log").read_text()

        second = run_cli("run", "--config", str(config), timeout=30)

        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr
        [line] = [line for line in second.stderr.splitlines() if "state error" in line]
        assert line.startswith(
            f"qbit-consumer: state error: {state} is in use by process {first.pid} "
            "(another qbit-consumer run)"
        )
        assert "consuming commands" not in second.stderr  # it started nothing
        assert first.poll() is None  # the first goes on
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
