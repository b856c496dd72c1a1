""".torrent files in downloads.add (CONTRACT section 4a) on the real services: v1 made by torf,
hybrid and v2 made by libtorrent, a private one; each downloaded to completion on loopback, its
hash computed by the service before qBittorrent saw the file."""

from __future__ import annotations

import base64
import json

import pytest

from tests.fixtures.seeder import hybrid_torrents_possible
from tests.test_lifecycle import FAST

pytestmark = pytest.mark.live


def send_torrent(broker, names, payload, request_id: str, category: str = "tv") -> None:
    assert payload.torrent_file is not None
    body = {
        "torrent": base64.b64encode(payload.torrent_file.read_bytes()).decode(),
        "category": category,
        "request_id": request_id,
    }
    broker.publish(names.command_exchange, "downloads.add", json.dumps(body).encode())


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param({}, id="v1"),
        pytest.param({"hybrid": True}, id="hybrid"),
        pytest.param({"v2_only": True}, id="v2"),
        pytest.param({"private": True}, id="private-v1"),
        pytest.param({"hybrid": True, "private": True}, id="private-hybrid"),
    ],
)
def test_a_torrent_file_is_downloaded_to_completion_under_the_hash_computed_before_the_add(
    qbittorrent, seeder, make_config, start_service, broker, names, events, kind
):
    if (kind.get("hybrid") or kind.get("v2_only")) and not hybrid_torrents_possible():
        pytest.fail("python3-libtorrent is needed to make v2 torrents: run `make test` as root")
    start_service(make_config(qbittorrent, polling=FAST))
    payload = seeder.share(2 * 2**20, **kind)

    send_torrent(broker, names, payload, request_id=f"file-{'-'.join(kind) or 'v1'}")

    received = events.wait_for("downloads.received", hash=payload.infohash)[0]
    assert (received["source"], received["magnet"]) == ("torrent", None)
    assert received["infohash_v2"] == payload.infohash_v2
    assert received["name"] == payload.name
    added = events.wait_for("downloads.added", hash=payload.infohash, timeout=20)[0]
    assert added["duplicate"] is False
    # No tracker and no peer in a .torrent made here: point qBittorrent at the seeder (the
    # only way to a private torrent's peers besides its trackers).
    qbit_id = payload.infohash_v2[:40] if payload.infohash_v2 else payload.infohash
    qbittorrent.client().torrents_add_peers(peers=[payload.peer], torrent_hashes=qbit_id)

    completed = events.wait_for("downloads.completed", hash=payload.infohash, timeout=60)[0]
    assert completed["request_id"] == received["request_id"]
    assert completed["size"] == payload.size
    [info] = qbittorrent.client().torrents_info(torrent_hashes=qbit_id)
    assert info.infohash_v1 == ("" if kind.get("v2_only") else payload.infohash)
    assert "qbit-consumer" in info.tags


def test_the_same_torrent_file_twice_is_a_duplicate_and_bad_files_are_dead_lettered(
    qbittorrent, seeder, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent, polling=FAST))
    payload = seeder.share(2**20)
    send_torrent(broker, names, payload, request_id="first")
    events.wait_for("downloads.added", hash=payload.infohash, request_id="first")
    send_torrent(broker, names, payload, request_id="again")
    again = events.wait_for("downloads.added", hash=payload.infohash, request_id="again")[0]
    assert again["duplicate"] is True

    for body in (
        {"torrent": "not base64!", "category": "tv"},
        {"torrent": base64.b64encode(b"d4:spam4:eggse").decode(), "category": "tv"},
        {"torrent": base64.b64encode(b"this is no bencode").decode(), "category": "tv"},
    ):
        broker.publish(names.command_exchange, "downloads.add", json.dumps(body).encode())
    failed = events.wait_for("downloads.failed", count=3, timeout=15)
    assert [e["reason"] for e in failed] == ["invalid_torrent"] * 3
    details = " | ".join(e["detail"] for e in failed)
    assert "not base64" in details and "no info dictionary" in details
    assert "not bencode" in details


def test_send_torrent_publishes_the_file_and_a_broken_one_is_refused_before_it_is_sent(
    qbittorrent, seeder, make_config, start_service, broker, names, events, tmp_path
):
    from tests.fixtures.service import run_cli

    cfg = make_config(qbittorrent, polling=FAST)
    start_service(cfg)
    payload = seeder.share(2**20)
    assert payload.torrent_file is not None

    sent = run_cli(
        "send", "--torrent", str(payload.torrent_file), "--category", "tv", "--config", cfg.source
    )
    assert sent.returncode == 0, sent.stderr
    received = events.wait_for("downloads.received", hash=payload.infohash)[0]
    assert received["source"] == "torrent"
    events.wait_for("downloads.added", hash=payload.infohash)

    broken = tmp_path / "broken.torrent"
    broken.write_bytes(b"d4:spam4:eggse")
    refused = run_cli("send", "--torrent", str(broken), "--category", "tv", "--config", cfg.source)
    assert refused.returncode == 1 and "invalid_torrent" in refused.stderr
    missing = run_cli(
        "send", "--torrent", str(tmp_path / "nope"), "--category", "tv", "--config", cfg.source
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert broker.message_count(names.command_queue) == 0
