"""`[qbittorrent] api_key` on a real qBittorrent 5.2+: keys made and rotated through the Web API.

With a key there is no login and no session cookie; a refused key is one clear alert, paced
like a ban, never a fall-back to the password nor a storm of requests; the key is a secret.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from qbit_consumer.health import check_health
from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.qbittorrent import QbitProcess, service_client
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash, run_cli, service_ini, spawn_service

pytestmark = pytest.mark.live


@pytest.fixture
def qbit(qbit_factory) -> QbitProcess:
    qbit = qbit_factory("api-key")
    if qbit.version_info < (5, 2):
        pytest.skip(f"API keys need qBittorrent 5.2 or later, this is {qbit.version}")
    return qbit


def rotate_key(qbit: QbitProcess) -> str:
    """A new key, made as a person would in the Web UI; the previous one stops working."""
    key = str(qbit.client().app_rotate_api_key()["apiKey"])
    assert key.startswith("qbt_")
    return key


def test_with_an_api_key_the_service_never_logs_in_and_never_prints_the_key(
    qbit, amqp_url, names, broker, events, tmp_path
):
    rotate_key(qbit)
    key = rotate_key(qbit)  # rotated once more: the service has the current one
    proxy = HttpFaultProxy(qbit.url)
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        proxy.url,
        "",  # no password at all: the key is the only credential
        qbittorrent={"api_key": key},
        polling={"interval_seconds": 0.5},
        logging={"format": "json", "level": "DEBUG"},
    )
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(rf"\(v{qbit.version}, Web API [\d.]+, API key\)", checked.stdout)
    log_path = tmp_path / "service.log"
    process = spawn_service(config, log_path)
    try:
        infohash = random_hash()
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode(),
        )
        broker.publish(names.command_exchange, "downloads.add", b"not json")
        events.wait_for("downloads.added", hash=infohash)
        dead = broker.get_all(names.dead_letter_queue, timeout=10, count=1)
        events.wait_for("downloads.progress", hash=infohash)
    finally:
        process.terminate()
        process.wait(15)
        proxy.close()

    assert process.returncode == 0
    assert qbit.client().torrents_info(torrent_hashes=infohash)[0].category == "tv"
    assert not [path for path in proxy.calls if path.startswith("/api/v2/auth/")]
    assert {h.get("Authorization") for _, h in proxy.headers} == {f"Bearer {key}"}
    assert not [h for _, h in proxy.headers if "Cookie" in h]  # no session, ever
    assert not [a for a in proxy.answers if a[1] >= 400]
    everything = "\n".join(
        [
            log_path.read_text(),
            json.dumps(events.drain()),
            json.dumps([{k: str(v) for k, v in props.headers.items()} for props, _ in dead]),
            checked.stdout + checked.stderr,
        ]
    )
    assert "invalid_json" in everything
    assert key not in everything and key[4:] not in everything


def test_a_key_rotated_away_is_one_clear_alert_without_a_retry_storm_and_no_password_fallback(
    qbit, make_config, start_service, events
):
    old = rotate_key(qbit)
    proxy = HttpFaultProxy(qbit.url)
    try:
        cfg = make_config(
            None,
            # A right password beside the key: it must not be tried when the key is refused.
            qbittorrent={"url": proxy.url, "api_key": old, "password": qbit.password},
            polling={"interval_seconds": 0.25, "failure_alert_threshold": 2},
        )
        running = start_service(cfg)
        wait_until(lambda: proxy.answers and proxy.answers[-1][1] == 200, 10, "a first poll")
        new = rotate_key(qbit)  # someone rotates the key in the Web UI
        assert new != old

        [failed] = events.wait_for("downloads.polling_failed", timeout=15)
        assert "403 Forbidden" in failed["error"] and "[qbittorrent] api_key" in failed["error"]
        [problem] = wait_until(
            lambda: [p for p in check_health(cfg) if "refuses us" in p], 10, "the healthcheck"
        )
        assert "api_key" in problem and "next attempt in" in problem
        refused_at, rounds = len(proxy.calls), running.service.poller.rounds
        time.sleep(3)  # 12 poll cycles: the gate holds every request back for 30 s
        assert len(proxy.calls) - refused_at <= 1
        assert running.service.poller.rounds - rounds >= 9  # it did go on polling
    finally:
        proxy.close()
    assert [a[1] for a in proxy.answers].count(403) == 1
    assert not [path for path in proxy.calls if path.startswith("/api/v2/auth/")]
    assert len(events.of("downloads.polling_failed")) == 1
    assert qbit.client().app_version().startswith("v5")  # no ban: the IP is still welcome


def test_qbittorrent_apis_own_environment_variables_never_replace_the_configuration(
    qbit, monkeypatch
):
    """qbittorrent-api reads a key and a password from QBITTORRENTAPI_* variables when it is
    given none: a key meant for another tool would silently replace our password (as it does
    for the test's own qbittorrent-api client, hence the key is made first)."""
    key = rotate_key(qbit)
    monkeypatch.setenv("QBITTORRENTAPI_API_KEY", "qbt_someone_elses_key")
    monkeypatch.setenv("QBITTORRENTAPI_PASSWORD", "someone-elses-password")
    proxy = HttpFaultProxy(qbit.url)
    try:
        with_password = service_client(proxy.url, password=qbit.password)
        with_password.ping()
        with_password.close()
        with_key = service_client(proxy.url, api_key=key)
        with_key.ping()
    finally:
        proxy.close()
    sent = [h.get("Authorization") for _, h in proxy.headers]
    assert None in sent and f"Bearer {key}" in sent and set(sent) == {None, f"Bearer {key}"}
    assert b"someone-elses-password" not in b"".join(body for _, body in proxy.bodies)
    assert [status for _, status, _ in proxy.answers].count(200) >= 2
