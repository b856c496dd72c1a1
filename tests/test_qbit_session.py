"""Our qBittorrent session against a real qbittorrent-nox, seen through a recording proxy."""

from __future__ import annotations

import secrets

import pytest
import requests

from qbit_consumer.config import QbittorrentConfig
from qbit_consumer.errors import TransientError
from qbit_consumer.login_gate import LoginGate
from qbit_consumer.qbit import QbitClient
from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.qbittorrent import USERNAME


def magnets(n: int) -> str:
    return "\n".join(f"magnet:?xt=urn:btih:{secrets.token_hex(20)}" for _ in range(n))


def calls_to(proxy: HttpFaultProxy, *endpoints: str) -> list[int]:
    return [sum(c.startswith(f"/api/v2/{e}") for c in proxy.calls) for e in endpoints]


def test_the_web_api_version_is_asked_once_per_login_not_before_every_add(qbit_factory):
    qbit = qbit_factory()
    proxy = HttpFaultProxy(qbit.url)
    try:
        client = QbitClient(
            QbittorrentConfig(url=proxy.url, username=USERNAME, password=qbit.password),
            LoginGate(),
        )
        client.ping()  # logs in
        proxy.calls.clear()
        for _ in range(3):
            assert client.add_magnet(magnets(5), category="", tags=["t"], save_path="")
        assert calls_to(proxy, "app/webapiVersion", "torrents/add", "auth/login") == [1, 3, 0]

        # A restart ends the session (qBittorrent could have been upgraded): the next request
        # logs in again, which forgets the version, so the add after it asks again.
        qbit.stop()
        qbit.start()
        proxy.calls.clear()
        for _ in range(2):
            assert client.add_magnet(magnets(1), category="", tags=["t"], save_path="")
        assert calls_to(proxy, "app/webapiVersion", "auth/login") == [1, 1]
        client.close()
    finally:
        proxy.close()


def test_a_ban_and_a_wrong_password_shut_the_login_gate_for_different_reasons(qbit_factory):
    qbit = qbit_factory(max_failed_logins=2)
    wrong = LoginGate()
    client = QbitClient(QbittorrentConfig(url=qbit.url, username=USERNAME, password="wrong"), wrong)
    with pytest.raises(TransientError, match="login failed"):
        client.ping()
    assert (wrong.shut_reason() or "").startswith("qBittorrent refused our login 1 time(s)")

    requests.post(  # the second refused login from this IP: qBittorrent bans it
        f"{qbit.url}/api/v2/auth/login", data={"username": USERNAME, "password": "x"}, timeout=5
    )
    banned = LoginGate()
    client = QbitClient(
        QbittorrentConfig(url=qbit.url, username=USERNAME, password=qbit.password), banned
    )
    with pytest.raises(TransientError, match="403 Forbidden"):
        client.ping()
    assert (banned.shut_reason() or "").startswith("qBittorrent answered 403 Forbidden 1 time(s)")
    with pytest.raises(TransientError, match="not asking qBittorrent for now"):
        client.ping()  # no request goes out while the gate is shut
