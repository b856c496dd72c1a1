"""The login gate: it paces our requests after qBittorrent refused us, and never closes for good.

The rules run on a fake monotonic clock; the two live tests run the whole service against a
real qbittorrent-nox that bans our IP, and one that refuses our password until it is fixed.
"""

from __future__ import annotations

import functools
import json
import time

import pytest
import requests

import qbit_consumer.qbit.login as gate_module
from qbit_consumer.errors import TransientError
from qbit_consumer.health import check_health
from qbit_consumer.qbit.login import LoginGate
from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.qbittorrent import USERNAME
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash


class FakeTime:
    """Stands in for the ``time`` module inside ``qbit``: a monotonic clock the test moves,
    and a wall clock that jumps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1.7e9

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall


@pytest.fixture
def clock(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(gate_module, "time", fake)
    return fake


def attempts(gate: LoginGate, clock: FakeTime, fail, count: int) -> list[float]:
    """Make ``count`` attempts, each as soon as the gate lets one through; their waits."""
    waits = []
    for _ in range(count):
        _, wait = fail()
        waits.append(wait)
        clock.now += wait - 0.001
        with pytest.raises(TransientError, match="next attempt in 1 s"):
            gate.check()
        clock.now += 0.001
        gate.check()  # open again: the next attempt may go
    return waits


def test_403s_back_off_from_30_s_doubling_to_an_hour_and_never_shut_for_good(clock):
    gate = LoginGate()
    waits = attempts(gate, clock, functools.partial(gate.forbidden, "403"), 12)
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600]
    for _ in range(2000):  # months of a ban that never ends: still an hour, no overflow
        gate.forbidden("403")
    assert gate.forbidden("403") == (2013, 3600)


def test_refused_logins_wait_30_s_then_300_s_then_an_hour_forever(clock):
    gate = LoginGate()
    refused = functools.partial(gate.refused, "login refused")
    assert attempts(gate, clock, refused, 6) == [30, 300, 3600, 3600, 3600, 3600]


def test_a_success_reopens_the_gate_and_starts_both_counts_over(clock):
    gate = LoginGate()
    gate.refused("login refused")
    gate.refused("login refused")
    gate.forbidden("403")
    assert gate.succeeded() is True
    gate.check()
    assert gate.shut_reason() is None
    assert gate.succeeded() is False  # already open: nothing to tell
    assert gate.refused("login refused") == (1, 30)
    assert gate.forbidden("403") == (1, 30)


def test_shut_reason_says_what_refused_us_and_when_we_ask_again(clock):
    gate = LoginGate()
    assert gate.shut_reason() is None
    gate.forbidden("qBittorrent answered 403 Forbidden")
    gate.forbidden("qBittorrent answered 403 Forbidden")
    clock.now += 10
    assert gate.shut_reason() == (
        "qBittorrent answered 403 Forbidden (2 time(s) in a row); next attempt in 50 s"
    )
    gate.refused("qBittorrent refused our login")
    clock.now += 31
    assert (
        gate.shut_reason() == "qBittorrent refused our login (1 time(s) in a row); next attempt now"
    )


def test_waits_are_measured_on_the_monotonic_clock_not_the_wall_clock(clock):
    gate = LoginGate()
    gate.forbidden("403")
    clock.wall += 86_400  # the wall clock jumps a day ahead: the gate stays shut
    with pytest.raises(TransientError):
        gate.check()
    clock.wall -= 2 * 86_400  # and back: nothing changes either
    clock.now += 30
    gate.check()


# -- live ------------------------------------------------------------------------------------

BAN_SECONDS = 15


def login_calls(proxy: HttpFaultProxy) -> int:
    return sum(call.startswith("/api/v2/auth/login") for call in proxy.calls)


def refusal(cfg) -> list[str]:
    return [problem for problem in check_health(cfg) if "refuses us" in problem]


@pytest.mark.live
def test_a_banned_ip_holds_commands_back_until_the_ban_ends_then_everything_resumes(
    qbit_factory, make_config, start_service, events, broker, names, monkeypatch
):
    monkeypatch.setattr(gate_module, "FORBIDDEN_BACKOFF_BASE", 0.5)
    monkeypatch.setattr(gate_module, "FORBIDDEN_BACKOFF_CAP", 2.0)
    server = qbit_factory(ban_duration=BAN_SECONDS, max_failed_logins=3)
    proxy = HttpFaultProxy(server.url)  # counts the service's requests; same client IP
    try:
        # Another client on the same IP (a neighbour on the Docker bridge) gets it banned.
        login = f"{server.url}/api/v2/auth/login"
        for _ in range(3):
            refused = requests.post(login, data={"username": USERNAME, "password": "x"}, timeout=5)
            # 5.2 answers a refused login with 401, earlier versions with 200 "Fails.".
            expected = (401, "Unauthorized") if server.version_info >= (5, 2) else (200, "Fails.")
            assert (refused.status_code, refused.text) == expected
        ban_ends = time.monotonic() + BAN_SECONDS
        good = {"username": USERNAME, "password": server.password}
        assert requests.post(login, data=good, timeout=5).status_code == 403

        cfg = make_config(
            None,
            qbittorrent={"url": proxy.url, "password": server.password},
            polling={"interval_seconds": 0.5, "failure_alert_threshold": 2},
        )
        start_service(cfg)
        infohash = random_hash()
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode(),
        )

        [failed] = events.wait_for("downloads.polling_failed", timeout=BAN_SECONDS)
        assert failed["consecutive_failures"] == 2
        assert "403 Forbidden" in failed["error"]
        [problem] = wait_until(lambda: refusal(cfg), 10, "the healthcheck to report the ban")
        assert "403 Forbidden" in problem and "next attempt" in problem

        events.wait_for("downloads.polling_recovered", timeout=BAN_SECONDS + 15)
        assert time.monotonic() > ban_ends - 0.5  # no request got through during the ban
        # More 403s than the three after which the gate used to shut for good, but paced:
        # 0.5 s doubling to 2 s, over a 15 s ban, is about 10 logins, not one per 0.5 s poll.
        assert 4 <= login_calls(proxy) <= 15
        events.wait_for("downloads.added", hash=infohash, timeout=15)
        wait_until(lambda: not refusal(cfg), 10, "the healthcheck to drop the ban")
        assert not events.of("downloads.failed")
    finally:
        proxy.close()


@pytest.mark.live
def test_a_refused_password_is_tried_again_forever_and_works_once_qbittorrent_accepts_it(
    qbit_factory, make_config, start_service, events, monkeypatch
):
    monkeypatch.setattr(gate_module, "REFUSED_LOGIN_BACKOFF", (0.3, 0.6, 1.0))
    server = qbit_factory()
    proxy = HttpFaultProxy(server.url)
    configured = "the-password-qbittorrent-lost"
    try:
        cfg = make_config(
            None,
            qbittorrent={"url": proxy.url, "password": configured},
            polling={"interval_seconds": 0.5, "failure_alert_threshold": 2},
        )
        start_service(cfg)
        [failed] = events.wait_for("downloads.polling_failed", timeout=15)
        assert "login" in failed["error"]
        [problem] = wait_until(lambda: refusal(cfg), 10, "the healthcheck to report it")
        assert "refused our login" in problem
        # The gate used to stop for good after the third refusal.
        wait_until(lambda: login_calls(proxy) >= 5, 15, "a fourth and a fifth login")

        # qBittorrent gets the password back (restored from a backup, say): no restart needed.
        server.client().app_set_preferences({"web_ui_password": configured})
        events.wait_for("downloads.polling_recovered", timeout=15)
        wait_until(lambda: not refusal(cfg), 10, "the healthcheck to drop the refusal")
    finally:
        proxy.close()
