"""Secrets stay secret, and only magnet links ever reach qBittorrent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import quote, urlsplit

import pytest

from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.qbittorrent import free_port
from tests.fixtures.rabbitmq import vhost_of, wait_until
from tests.fixtures.service import magnet_for, random_hash, service_ini, spawn_service, write_ini

pytestmark = pytest.mark.live

RMQ_USER, RMQ_PASSWORD = "qbc-secret-user", "rmq-S3cr3t-7f1d"


@pytest.fixture
def secret_broker_user(amqp_url):
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to create a user with a known password")
    subprocess.run(
        ["rabbitmqctl", "add_user", RMQ_USER, RMQ_PASSWORD], capture_output=True, check=True
    )
    subprocess.run(
        ["rabbitmqctl", "set_permissions", "-p", vhost_of(amqp_url), RMQ_USER, ".*", ".*", ".*"],
        capture_output=True,
        check=True,
    )
    parts = urlsplit(amqp_url)
    yield parts._replace(
        netloc=f"{RMQ_USER}:{quote(RMQ_PASSWORD)}@{parts.hostname}:{parts.port or 5672}"
    ).geturl()
    subprocess.run(["rabbitmqctl", "delete_user", RMQ_USER], capture_output=True, check=False)


def test_passwords_never_appear_in_logs_events_or_dead_letter_headers(
    qbittorrent, secret_broker_user, names, broker, events, tmp_path
):
    proxy = HttpFaultProxy(qbittorrent.url)
    proxy.fail_paths["/api/v2/torrents/add"] = 503  # so that error details are produced
    config = service_ini(
        tmp_path / "config.ini",
        secret_broker_user,
        names,
        proxy.url,
        qbittorrent.password,
        rabbitmq={"max_attempts": 2, "retry_delay_seconds": 0.5},
        logging={"format": "json", "level": "DEBUG"},
    )
    log_path = tmp_path / "service.log"
    process = spawn_service(config, log_path)
    try:
        broker.publish(names.command_exchange, "downloads.add", b"not json")
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(random_hash()), "category": "tv"}).encode(),
        )
        wait_until(
            lambda: broker.message_count(names.dead_letter_queue) == 2, 30, "two dead letters"
        )
        dead = broker.get_all(names.dead_letter_queue)
    finally:
        process.terminate()
        process.wait(15)
        proxy.close()
    # A failed login too: its error path must not echo the password either.
    wrong = write_ini(
        tmp_path / "wrong.ini",
        {
            "rabbitmq": {"url": secret_broker_user},
            "qbittorrent": {"url": qbittorrent.url, "password": "Wr0ng-Pa55-9c2e"},
        },
    )
    checked = subprocess.run(
        [sys.executable, "-m", "qbit_consumer", "check", "--config", str(wrong)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "login failed" in checked.stdout

    everything = "\n".join(
        [
            log_path.read_text(),
            json.dumps(events.drain()),
            json.dumps([{k: str(v) for k, v in props.headers.items()} for props, _ in dead]),
            checked.stdout + checked.stderr,
        ]
    )
    assert "retries_exhausted" in everything and "invalid_json" in everything
    for secret in (RMQ_PASSWORD, quote(RMQ_PASSWORD), qbittorrent.password, "Wr0ng-Pa55-9c2e"):
        assert secret not in everything


def test_only_magnet_uris_reach_qbittorrent(
    qbittorrent, make_config, start_service, broker, names, events
):
    proxy = HttpFaultProxy(qbittorrent.url)
    try:
        start_service(
            make_config(None, qbittorrent={"url": proxy.url, "password": qbittorrent.password})
        )
        good = random_hash()
        for magnet in (
            "http://127.0.0.1:9/evil.torrent",
            "/etc/passwd",
            magnet_for(random_hash()) + "\nhttp://x/y",
            magnet_for(good),
        ):
            broker.publish(
                names.command_exchange,
                "downloads.add",
                json.dumps({"magnet": magnet, "category": "tv"}).encode(),
            )
        events.wait_for("downloads.added", hash=good)
        wait_until(lambda: len(events.of("downloads.failed")) == 3, 10, "three refusals")
        time.sleep(0.2)
    finally:
        proxy.close()
    adds = [body for path, body in proxy.bodies if path.startswith("/api/v2/torrents/add")]
    assert len(adds) == 1  # the three others never reached qBittorrent
    assert f"magnet%3A%3Fxt%3Durn%3Abtih%3A{good}".encode() in adds[0]
    assert b"http" not in adds[0] and b"passwd" not in adds[0]


QBIT_URL_SECRET = "pr0xy-B4sic-5ecret-e81c"  # basic auth of a reverse proxy in front of the Web UI


def start_process(config, log_path):
    with log_path.open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "qbit_consumer", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize(
    ("reachable", "log_format"), [(True, "json"), (False, "text")], ids=["qbittorrent", "closed"]
)
def test_a_password_in_the_qbittorrent_url_appears_nowhere(
    reachable, log_format, qbittorrent, amqp_url, names, broker, events, tmp_path
):
    target = qbittorrent.url if reachable else f"http://127.0.0.1:{free_port()}"
    # From 5.2 qBittorrent itself takes a URL's userinfo (sent as HTTP Basic auth) and counts
    # a wrong one as a failed login; earlier versions ignore it (it is for a proxy in front).
    secret = qbittorrent.password if qbittorrent.version_info >= (5, 2) else QBIT_URL_SECRET
    url = target.replace("http://", f"http://admin:{secret}@")
    redacted = target.replace("http://", "http://admin:***@")
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        url,
        qbittorrent.password,
        polling={"interval_seconds": 0.5, "failure_alert_threshold": 2},
        logging={"format": log_format, "level": "DEBUG"},
    )
    log_path = tmp_path / "service.log"
    process = start_process(config, log_path)
    try:
        if reachable:  # a configuration that works: commands go through
            wait_until(lambda: "consuming commands" in log_path.read_text(), 30, "the consumer")
            infohash = random_hash()
            broker.publish(names.command_exchange, "downloads.add", b"not json")
            broker.publish(
                names.command_exchange,
                "downloads.add",
                json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode(),
            )
            events.wait_for("downloads.added", hash=infohash)
            dead = broker.get_all(names.dead_letter_queue, timeout=10, count=1)
        else:  # polls fail, and their error names the URL
            [failed] = events.wait_for("downloads.polling_failed", timeout=30)
            assert f"unreachable at {redacted}" in failed["error"]
            dead = []
    finally:
        process.terminate()
        process.wait(15)
    checked = subprocess.run(
        [sys.executable, "-m", "qbit_consumer", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert redacted in checked.stdout

    logs = log_path.read_text()
    assert reachable or f"unreachable at {redacted}" in logs
    for where, text in {
        "log": logs,
        "events": json.dumps(events.drain()),
        "dead-letter headers": json.dumps(
            [{k: str(v) for k, v in props.headers.items()} for props, _ in dead]
        ),
        "check": checked.stdout + checked.stderr,
    }.items():
        assert secret not in text, where


def test_control_characters_in_a_torrent_name_or_request_id_cannot_forge_text_log_lines(
    qbittorrent, amqp_url, names, broker, events, tmp_path
):
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        qbittorrent.url,
        qbittorrent.password,
        logging={"format": "text", "level": "DEBUG"},
    )
    log_path = tmp_path / "service.log"
    process = spawn_service(config, log_path)
    infohash = random_hash()
    forged = "2026-01-01+00:00:00,000+CRITICAL+MainThread+forged:+%1B%5B2J%00%7F%C2%9B"
    try:
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps(
                {
                    "magnet": f"magnet:?xt=urn:btih:{infohash}&dn=evil%0A{forged}%0D",
                    "category": "tv",
                    "request_id": "req\n\x1b[31mred\x00",
                }
            ).encode(),
        )
        [added] = events.wait_for("downloads.added", hash=infohash)
    finally:
        process.terminate()
        process.wait(15)
    assert added["name"].startswith("evil\n2026-01-01 00:00:00,000 CRITICAL")  # qBittorrent kept it

    log = log_path.read_text()
    for raw in ("\x00", "\x1b", "\x7f", "\x9b", "\r"):
        assert raw not in log, repr(raw)
    records = log.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) for line in records)
    assert not any(line.startswith("2026-01-01 00:00:00,000") for line in records)
    [line] = [line for line in records if " added evil" in line]
    assert (
        "evil\\n2026-01-01 00:00:00,000 CRITICAL MainThread forged: \\x1b[2J\\x00\\x7f\\x9b\\r"
        in line
    )
    assert "request_id=req\\n\\x1b[31mred\\x00" in line
