"""qBittorrent's answers across 4.5-5.3, replayed, for the edge cases a real server cannot be
made to give on demand (a 4xx or 5xx to an add, logins refused a set number of times). The same
answers come from the real 4.5.2, 5.1.0 and 5.3.0 in the live suite (test_qbit_session.py,
test_add_command.py, test_api_key.py); docs/compatibility.md lists them."""

from __future__ import annotations

import json
import re

import pytest
import responses

from qbit_consumer.commands import add, batch
from qbit_consumer.commands.batch import AddResult, add_downloads
from qbit_consumer.commands.table import parse_command
from qbit_consumer.config import Config, QbittorrentConfig
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.errors import InvalidCommand, TransientError
from qbit_consumer.model import Torrent, index_torrents
from qbit_consumer.qbit.client import QbitClient
from qbit_consumer.qbit.login import LoginGate

URL = "http://qbt.test:8080"
V1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"


def torrent_item(state: str = "stoppedDL", **fields):
    item = {
        "hash": V1,
        "infohash_v1": V1,
        "infohash_v2": "",
        "name": "x",
        "state": state,
        "category": "tv",
        "tags": "qbit-consumer",
        "save_path": "/data/tv",
        "content_path": "/data/tv/x",
        "progress": 0.0,
        "size": 0,
        "total_size": -1,
        "amount_left": 0,
        "downloaded": 0,
        "completion_on": -1,
        "dlspeed": 0,
        "upspeed": 0,
        "eta": 8640000,
        "num_seeds": 0,
        "num_leechs": 0,
        "added_on": 1,
    }
    item.update(fields)
    return item


def add_download(qbit, command, save_path):
    """One command through the batch path; raise its error like the single path did."""
    [outcome] = add_downloads(qbit, [command], lambda _category: save_path)
    if not isinstance(outcome, AddResult):
        raise outcome
    return outcome


def command():
    return parse_command(
        add.ROUTING_KEY,
        json.dumps({"magnet": f"magnet:?xt=urn:btih:{V1}", "category": "tv"}).encode(),
        correlation_id=None,
        message_id=None,
        cfg=Config(categories={"tv": ""}),
        context=CommandContext(),
    )[1]


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{URL}/api/v2/app/webapiVersion", body="2.15.1")
        mock.add(responses.POST, f"{URL}/api/v2/app/webapiVersion", body="2.15.1")
        mock.add(responses.POST, f"{URL}/api/v2/app/version", body="v5.2.0")
        mock.add(responses.GET, f"{URL}/api/v2/app/version", body="v5.2.0")
        for method in (responses.GET, responses.POST):
            mock.add(
                method,
                f"{URL}/api/v2/torrents/categories",
                json={"tv": {"name": "tv", "savePath": ""}},
            )
        mock.add(responses.POST, f"{URL}/api/v2/torrents/addTags", body="")
        yield mock


def client(gate=None):
    return QbitClient(
        QbittorrentConfig(url=URL, username="admin", password="secret"), gate or LoginGate()
    )


def login_204(api):
    # 5.2: 204 No Content, empty body, cookie named after the port.
    api.add(
        responses.POST,
        f"{URL}/api/v2/auth/login",
        status=204,
        headers={"Set-Cookie": "QBT_SID_8080=abc; HttpOnly; path=/"},
    )


def test_qbittorrent_5_2_login_204_and_json_add_answer_are_understood(api):
    login_204(api)
    info = api.add(responses.POST, f"{URL}/api/v2/torrents/info", json=[])
    api.add(
        responses.POST,
        f"{URL}/api/v2/torrents/add",
        status=200,
        json={
            "success_count": 1,
            "failure_count": 0,
            "pending_count": 0,
            "added_torrent_ids": [V1],
        },
    )
    qbit = client()
    # qBittorrent lists it a moment after accepting it (adding is asynchronous).
    api.replace(responses.POST, f"{URL}/api/v2/torrents/info", json=[])
    calls = {"n": 0}

    def listing(request):
        calls["n"] += 1
        return (200, {}, json.dumps([] if calls["n"] < 3 else [torrent_item()]))

    api.remove(info)
    api.add_callback(responses.POST, f"{URL}/api/v2/torrents/info", callback=listing)
    result = add_download(qbit, command(), "")
    assert result.duplicate is False
    assert result.torrent.state == "stoppedDL"
    assert calls["n"] >= 3


def test_qbittorrent_5_2_conflict_for_a_torrent_it_holds_is_a_duplicate(api):
    login_204(api)
    answers = iter([[], [torrent_item("stoppedUP", progress=1.0)]])
    api.add_callback(
        responses.POST,
        f"{URL}/api/v2/torrents/info",
        callback=lambda r: (200, {}, json.dumps(next(answers))),
    )
    api.add(responses.POST, f"{URL}/api/v2/torrents/add", status=409, body="Conflict")
    result = add_download(client(), command(), "")
    assert result.duplicate is True


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, "Fails."), (409, "")],
    ids=["4.x Fails.", "5.2 409 Conflict"],
)
def test_a_refused_magnet_that_qbittorrent_does_not_list_is_retried_not_rejected(
    api, status, body, monkeypatch
):
    # qBittorrent answers so for a torrent it is still loading: not a verdict on the magnet.
    monkeypatch.setattr(batch, "RELIST_PAUSE_SECONDS", 0.0)
    login_204(api)
    api.add(responses.POST, f"{URL}/api/v2/torrents/info", json=[])
    api.add(responses.POST, f"{URL}/api/v2/torrents/add", status=status, body=body)
    with pytest.raises(TransientError, match="lists no torrent for it"):
        add_download(client(), command(), "")


def test_a_4xx_answer_to_add_is_qbittorrent_rejected(api):
    login_204(api)
    api.add(responses.POST, f"{URL}/api/v2/torrents/info", json=[])
    api.add(responses.POST, f"{URL}/api/v2/torrents/add", status=415, body="Unsupported")
    with pytest.raises(InvalidCommand) as info:
        add_download(client(), command(), "")
    assert "HTTP 415" in info.value.detail


def test_a_4xx_answer_to_any_call_but_the_add_is_transient_never_a_rejection(api):
    # Only the add rejects a command; a 4xx elsewhere (a proxy's rule, a version's quirk)
    # must not dead-letter a valid magnet.
    login_204(api)
    api.add(responses.POST, f"{URL}/api/v2/torrents/info", status=415, body="Unsupported")
    api.replace(responses.POST, f"{URL}/api/v2/torrents/addTags", status=415, body="Unsupported")
    with pytest.raises(TransientError, match="HTTP 415"):
        client().torrents([V1])
    with pytest.raises(TransientError, match="HTTP 415"):
        client().add_tags(V1, ["t"])


def test_server_errors_are_transient(api):
    login_204(api)
    api.add(responses.POST, f"{URL}/api/v2/torrents/info", status=503)
    with pytest.raises(TransientError, match="HTTP 503"):
        client().torrents([V1])


def test_refused_logins_spend_qbittorrents_ban_budget_slowly(api):
    # 5.2 answers 401 to bad credentials; every request without a session gets 403 first.
    login = api.add(responses.POST, f"{URL}/api/v2/auth/login", status=401)
    api.add(responses.POST, f"{URL}/api/v2/torrents/info", status=403)
    gate = LoginGate()
    clock = {"now": 1000.0}

    import qbit_consumer.qbit.login as gate_module

    original = gate_module.time.monotonic
    gate_module.time.monotonic = lambda: clock["now"]
    try:
        qbit = client(gate)
        for _ in range(20):  # a busy service tries again and again...
            with pytest.raises(TransientError):
                qbit.torrents([V1])
            clock["now"] += 400  # ...over a long time
    finally:
        gate_module.time.monotonic = original
    # 30 s, then 300 s, then an hour between attempts: 4 logins in 20 tries 400 s apart,
    # fewer than the 5 failures after which qBittorrent bans an IP by default.
    assert login.call_count == 4


def test_login_attempts_wait_for_the_backoff_between_failures(api):
    login = api.add(responses.POST, f"{URL}/api/v2/auth/login", body="Fails.")  # 4.x bad password
    api.add(responses.POST, f"{URL}/api/v2/torrents/info", status=403)
    qbit = client()
    with pytest.raises(TransientError, match="login failed"):
        qbit.torrents([V1])
    for _ in range(5):
        with pytest.raises(TransientError, match="next attempt in"):
            qbit.torrents([V1])
    assert login.call_count == 1


@pytest.mark.parametrize(
    "state", ["pausedDL", "stoppedDL", "pausedUP", "stoppedUP", "forcedMetaDL"]
)
def test_torrent_states_of_4x_and_5x_are_kept_verbatim(state):
    assert Torrent.from_api(torrent_item(state)).state == state


def test_hybrid_torrent_matches_on_v1_v2_and_its_truncated_v2_id():
    v2 = "32bcc50c8f5385308227700e85b55929100c875f76ea37a65c595ad930391ac4"
    torrent = Torrent.from_api(torrent_item(hash=v2[:40], infohash_v1=V1, infohash_v2=v2))
    assert set(torrent.keys) == {V1, v2, v2[:40]}
    assert index_torrents([torrent]) == {V1: torrent, v2: torrent, v2[:40]: torrent}
    assert re.fullmatch("[0-9a-f]{40}", torrent.id)


def test_an_unreachable_qbittorrent_gives_every_command_of_a_batch_a_transient_outcome():
    # Nothing answers at this address: the batch's first call fails.
    qbit = QbitClient(
        QbittorrentConfig(url="http://127.0.0.1:9", username="a", password="b", timeout_seconds=1),
        LoginGate(),
    )
    commands = [command(), command()]
    outcomes = add_downloads(qbit, commands, lambda _category: "")
    assert len(outcomes) == 2
    assert all(isinstance(o, TransientError) and "unreachable" in str(o) for o in outcomes)


def test_a_batch_adds_new_magnets_in_one_call_and_answers_duplicates_within_it(api):
    login_204(api)
    v1_b = "d" * 40
    answers = iter([[], [torrent_item(), torrent_item(hash=v1_b, infohash_v1=v1_b)]])
    api.add_callback(
        responses.POST,
        f"{URL}/api/v2/torrents/info",
        callback=lambda r: (200, {}, json.dumps(next(answers))),
    )
    add_call = api.add(responses.POST, f"{URL}/api/v2/torrents/add", body="Ok.")

    def cmd(h):
        return parse_command(
            add.ROUTING_KEY,
            json.dumps({"magnet": f"magnet:?xt=urn:btih:{h}", "category": "tv"}).encode(),
            correlation_id=None,
            message_id=None,
            cfg=Config(categories={"tv": ""}),
            context=CommandContext(),
        )[1]

    outcomes = add_downloads(client(), [cmd(V1), cmd(v1_b), cmd(V1)], lambda _c: "")
    assert [o.duplicate for o in outcomes] == [False, False, True]
    assert add_call.call_count == 1
    body = add_call.calls[0].request.body
    body = body.decode() if isinstance(body, bytes) else body
    assert "urls=magnet" in body and "%0A" in body  # both magnets, one per line, one call


def test_a_tagged_listing_that_breaks_off_midway_is_a_transient_error_not_a_short_list(api):
    # A real qBittorrent cannot be made to stop in the middle of an answer on demand.
    login_204(api)
    whole = json.dumps([torrent_item(hash=f"{n:040x}") for n in range(3)])
    for method in (responses.GET, responses.POST):
        api.add(method, f"{URL}/api/v2/torrents/info", body=whole[: len(whole) // 2])

    listed = []
    with pytest.raises(TransientError, match="broke off"):
        listed.extend(client().tagged("qbit-consumer"))
    assert len(listed) < 3  # what came before the break is no answer: the caller gets an error
