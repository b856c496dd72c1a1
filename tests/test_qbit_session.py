"""Our qBittorrent session against a real qbittorrent-nox of each version, seen through a
recording proxy: the login and its cookie (renamed in 5.2), the ban, the clock."""

from __future__ import annotations

import secrets
import time

import pytest
import requests

from qbit_consumer.errors import TransientError
from qbit_consumer.qbit.login import LoginGate
from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.qbittorrent import USERNAME, service_client

pytestmark = [pytest.mark.live, pytest.mark.compat]


def magnets(n: int) -> str:
    return "\n".join(f"magnet:?xt=urn:btih:{secrets.token_hex(20)}" for _ in range(n))


def calls_to(proxy: HttpFaultProxy, *endpoints: str) -> list[int]:
    return [sum(c.startswith(f"/api/v2/{e}") for c in proxy.calls) for e in endpoints]


def test_the_web_api_version_is_asked_once_per_login_not_before_every_add(qbit_factory):
    qbit = qbit_factory()
    proxy = HttpFaultProxy(qbit.url)
    try:
        client = service_client(proxy.url, password=qbit.password)
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
    client = service_client(qbit.url, wrong, password="wrong")
    with pytest.raises(TransientError, match="login failed"):
        client.ping()
    reason = wrong.shut_reason() or ""
    assert reason.startswith("qBittorrent refused our login as 'admin'")
    assert "(1 time(s) in a row)" in reason

    requests.post(  # the second refused login from this IP: qBittorrent bans it
        f"{qbit.url}/api/v2/auth/login", data={"username": USERNAME, "password": "x"}, timeout=5
    )
    banned = LoginGate()
    client = service_client(qbit.url, banned, password=qbit.password)
    with pytest.raises(TransientError, match="403 Forbidden"):
        client.ping()
    reason = banned.shut_reason() or ""
    # qBittorrent's own words are quoted: here, that it banned us.
    assert reason.startswith("qBittorrent answered 403 Forbidden ('Your IP address has been banned")
    assert "(1 time(s) in a row)" in reason
    with pytest.raises(TransientError, match="not asking qBittorrent for now"):
        client.ping()  # no request goes out while the gate is shut


def test_one_login_then_the_session_cookie_of_the_versions_name_carries_every_request(
    qbit_factory,
):
    qbit = qbit_factory()
    proxy = HttpFaultProxy(qbit.url)
    try:
        client = service_client(proxy.url, password=qbit.password)
        client.ping()
        client.torrents([secrets.token_hex(20)])
        assert client.add_magnet(magnets(1), category="", tags=["t"], save_path="")
        client.close()
    finally:
        proxy.close()

    # 5.2 answers a login 204 with no body and names the cookie after its own port (not the
    # proxy's: qbittorrent-api must not look for it by the URL's port).
    new_login = qbit.version_info >= (5, 2)
    cookie = f"QBT_SID_{qbit.webui_port}" if new_login else "SID"
    logins = [a for a in proxy.answers if a[0].startswith("/api/v2/auth/login")]
    assert logins == [
        ("/api/v2/auth/login", 204, "") if new_login else ("/api/v2/auth/login", 200, "Ok.")
    ]
    after = proxy.headers[[p for p, _ in proxy.headers].index("/api/v2/auth/login") + 1 :]
    assert after and all(h.get("Cookie", "").startswith(f"{cookie}=") for _, h in after)
    assert [a[1] for a in proxy.answers].count(403) == 1  # the first request, before the login


def test_the_session_holds_with_this_clock_two_hours_ahead_of_qbittorrents(
    qbit_factory, monkeypatch
):
    """From 5.2 the session cookie expires an hour after the login on qBittorrent's clock; a
    clock ahead of it by that much used to drop every cookie on arrival: 403 after each login,
    taken for a ban."""
    qbit = qbit_factory()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 7200)
    gate = LoginGate()
    proxy = HttpFaultProxy(qbit.url)
    try:
        client = service_client(proxy.url, gate, password=qbit.password)
        client.ping()
        for _ in range(3):
            assert client.torrents([secrets.token_hex(20)]) == []
        client.close()
    finally:
        proxy.close()
    assert gate.shut_reason() is None
    assert calls_to(proxy, "auth/login") == [1]  # one session carried every request


def test_the_tagged_listing_read_as_it_arrives_gives_every_tagged_torrent_and_no_other(
    qbittorrent,
):
    tag = f"t-{secrets.token_hex(4)}"  # the shared qBittorrent holds other tests' torrents
    hashes = {secrets.token_hex(20) for _ in range(10)}
    client = service_client(qbittorrent.url, password=qbittorrent.password)
    try:
        assert client.add_magnet(
            "\n".join(f"magnet:?xt=urn:btih:{h}" for h in hashes),
            category="",
            tags=[tag],
            save_path="",
        )
        assert client.add_magnet(magnets(2), category="", tags=["other"], save_path="")
        deadline = time.monotonic() + 10
        while len(listed := [t.id for t in client.tagged(tag)]) < 10:
            assert time.monotonic() < deadline, listed
            time.sleep(0.1)
    finally:
        client.close()
    assert sorted(listed) == sorted(hashes)
