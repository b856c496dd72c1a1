"""The command line: a bad config or a corrupt state file is an exit code and one line (a bad
config checked in-process, each once from a real process), and `check` and `run` as a user runs
them, against the real services."""

from __future__ import annotations

import json
import signal
import time

import pytest

from qbit_consumer.cli.main import main
from tests.fixtures.service import (
    magnet_for,
    random_hash,
    run_cli,
    service_ini,
    spawn_service,
    write_ini,
)

BAD_CONFIGS = [
    (None, "file not found"),
    ("[rabbitmq]\nurl = http://wrong\n", "[rabbitmq] url: must start with amqp://"),
    (
        "[qbittorrent]\ntimeout_seconds = fast\n",
        "[qbittorrent] timeout_seconds: expected a number",
    ),
    ("[nonsense]\n", "[nonsense]: unknown section"),
]


@pytest.mark.parametrize(("text", "words"), BAD_CONFIGS)
@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_config_exits_2_with_one_clear_line(tmp_path, capsys, text, words, command):
    path = tmp_path / "config.ini"
    if text is not None:
        path.write_text(text)
    assert main([command, "--config", str(path)]) == 2
    said = capsys.readouterr()
    assert said.out == ""
    [line] = said.err.splitlines()
    assert str(path) in line and words in line


def test_the_process_exits_2_with_that_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "config.ini"
    path.write_text("[nonsense]\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert str(path) in line and "[nonsense]: unknown section" in line
    assert "Traceback" not in result.stderr


def test_a_corrupt_state_file_stops_the_service_with_one_line(tmp_path):
    state = tmp_path / "state.sqlite3"
    state.write_bytes(b"garbage" * 1000)
    # Nothing answers at these addresses: the state file is refused before either is tried.
    config = write_ini(
        tmp_path / "config.ini",
        {
            "rabbitmq": {"url": "amqp://guest:guest@127.0.0.1:9/%2F"},
            "qbittorrent": {"url": "http://127.0.0.1:9"},
            "state": {"path": state},
        },
    )
    result = run_cli("run", "--config", str(config), timeout=30)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "state error" in line]
    assert len(errors) == 1 and str(state) in errors[0]
    assert "Traceback" not in result.stderr
    assert state.read_bytes() == b"garbage" * 1000


@pytest.mark.live
def test_check_reaches_both_services_and_fails_when_qbittorrent_is_down(
    qbittorrent, amqp_url, tmp_path
):
    good = write_ini(
        tmp_path / "good.ini",
        {
            "rabbitmq": {"url": amqp_url},
            "qbittorrent": {"url": qbittorrent.url, "password": qbittorrent.password},
        },
    )
    result = run_cli("check", "--config", str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "qBittorrent ok" in result.stdout and f"v{qbittorrent.version}" in result.stdout
    assert "RabbitMQ    ok" in result.stdout
    assert qbittorrent.password not in result.stdout + result.stderr

    down = write_ini(
        tmp_path / "down.ini",
        {"rabbitmq": {"url": amqp_url}, "qbittorrent": {"url": "http://127.0.0.1:9"}},
    )
    result = run_cli("check", "--config", str(down))
    assert result.returncode == 1
    assert "qBittorrent FAILED" in result.stdout


@pytest.mark.live
def test_service_process_adds_a_command_sent_with_plain_pika_and_exits_0_on_sigterm(
    qbittorrent, amqp_url, names, broker, events, tmp_path
):
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        qbittorrent.url,
        qbittorrent.password,
        logging={"level": "DEBUG", "format": "json"},
    )
    log_path = tmp_path / "service.log"
    process = spawn_service(config, log_path)
    try:
        infohash = random_hash()
        broker.add(names.command_exchange, magnet_for(infohash), request_id="by-hand")
        events.wait_for("downloads.added", hash=infohash, request_id="by-hand")
        assert qbittorrent.client().torrents_info(torrent_hashes=infohash)[0].category == "movies"

        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert time.monotonic() - sent < 10
    finally:
        if process.poll() is None:
            process.kill()
    output = log_path.read_text()
    records = [json.loads(line) for line in output.splitlines()]
    assert any(r.get("hash") == infohash and r["message"].startswith("added") for r in records)
    assert qbittorrent.password not in output
    assert "guest:guest" not in output
