"""downloads.remove / pause / resume on the real services (CONTRACT section 4b): real
downloads on loopback, the data checked on disk, qBittorrent asked what it holds."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash, service_ini, spawn_service
from tests.test_lifecycle import FAST, send

pytestmark = pytest.mark.live


def control(broker, names, command: str, infohash: str, **fields) -> None:
    body = {"hash": infohash, **fields}
    broker.publish(names.command_exchange, f"downloads.{command}", json.dumps(body).encode())


def content_of(qbittorrent, infohash: str) -> Path:
    [info] = qbittorrent.client().torrents_info(torrent_hashes=infohash)
    return Path(info.content_path)


@pytest.mark.parametrize("delete_files", [False, True], ids=["keeping-data", "deleting-data"])
def test_remove_after_a_real_download_keeps_or_deletes_the_data_on_disk(
    qbittorrent, seeder, make_config, start_service, broker, names, events, delete_files
):
    start_service(make_config(qbittorrent, polling=FAST))
    payload = seeder.share(2 * 2**20)
    send(broker, names, payload.magnet, request_id="fetch")
    events.wait_for("downloads.completed", hash=payload.infohash, timeout=60)
    data = content_of(qbittorrent, payload.infohash)
    assert (data / "a.bin").is_file()

    fields = {"delete_files": True} if delete_files else {}
    control(broker, names, "remove", payload.infohash.upper(), request_id="tidy", **fields)

    removed = events.wait_for("downloads.removed", hash=payload.infohash, timeout=20)[0]
    assert (removed["reason"], removed["files_deleted"]) == ("command", delete_files)
    assert (removed["request_id"], removed["completed"]) == ("tidy", True)
    assert not qbittorrent.client().torrents_info(torrent_hashes=payload.infohash)
    wait_until(lambda: (data / "a.bin").exists() != delete_files, 10, "the data as asked")
    time.sleep(1.0)  # a few poll cycles: nothing reports it again
    assert len(events.of("downloads.removed", hash=payload.infohash)) == 1

    control(broker, names, "remove", payload.infohash)  # a repeat
    time.sleep(1.0)
    assert len(events.of("downloads.removed", hash=payload.infohash)) == 1
    assert broker.message_count(names.dead_letter_queue) == 0


def test_remove_during_a_real_download_deletes_what_was_downloaded_so_far(
    qbit_factory, seeder, make_config, start_service, broker, names, events
):
    leecher = qbit_factory("slow")
    leecher.client().app_set_preferences({"dl_limit": 2**20})  # 8 MiB take ~8 s
    start_service(make_config(leecher, polling=FAST))
    payload = seeder.share(8 * 2**20)
    send(broker, names, payload.magnet, request_id="half-way")
    wait_until(
        lambda: any(
            0.1 < e["progress"] < 0.9
            for e in events.of("downloads.progress", hash=payload.infohash)
        ),
        30,
        "the download under way",
    )
    data = content_of(leecher, payload.infohash)
    assert data.exists()

    control(broker, names, "remove", payload.infohash, delete_files=True)

    removed = events.wait_for("downloads.removed", hash=payload.infohash, timeout=20)[0]
    assert (removed["reason"], removed["files_deleted"], removed["completed"]) == (
        "command",
        True,
        False,
    )
    assert 0 < removed["last_progress"] < 1
    wait_until(lambda: not data.exists(), 10, "the partial data deleted")
    time.sleep(1.0)
    assert events.of("downloads.completed", hash=payload.infohash) == []
    assert len(events.of("downloads.removed", hash=payload.infohash)) == 1


@pytest.mark.compat
def test_a_remove_published_right_after_its_add_is_applied_after_it(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent, polling=FAST))
    infohash = random_hash()
    send(broker, names, magnet_for(infohash), request_id="short-lived")
    control(broker, names, "remove", infohash)  # right after: usually in the same batch

    removed = events.wait_for("downloads.removed", hash=infohash, timeout=20)[0]
    kinds = [e["event"] for e in events.drain() if e.get("hash") == infohash]
    assert [k for k in kinds if k != "downloads.progress"] == [
        "downloads.received",
        "downloads.added",
        "downloads.removed",
    ]
    assert (removed["reason"], removed["request_id"]) == ("command", "short-lived")
    assert not qbittorrent.client().torrents_info(torrent_hashes=infohash)


@pytest.mark.compat
def test_pause_and_resume_by_command_are_carried_out_and_reported_once_each(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent, polling=FAST))
    infohash = random_hash()
    send(broker, names, magnet_for(infohash), request_id="mine")
    events.wait_for("downloads.added", hash=infohash)
    stopped = "stoppedDL" if qbittorrent.version_info >= (5, 0) else "pausedDL"

    control(broker, names, "pause", infohash)
    paused = events.wait_for("downloads.paused", hash=infohash, timeout=10)[0]
    [info] = qbittorrent.client().torrents_info(torrent_hashes=infohash)
    assert info.state == stopped
    control(broker, names, "pause", infohash)  # already paused: no second event
    control(broker, names, "resume", infohash)
    resumed = events.wait_for("downloads.resumed", hash=infohash, timeout=10)[0]
    time.sleep(1.0)

    assert (paused["by"], paused["state"], paused["request_id"]) == ("command", stopped, "mine")
    assert resumed["by"] == "command" and resumed["state"] != stopped
    [info] = qbittorrent.client().torrents_info(torrent_hashes=infohash)
    assert info.state != stopped
    assert len(events.of("downloads.paused", hash=infohash)) == 1
    assert len(events.of("downloads.resumed", hash=infohash)) == 1
    assert broker.message_count(names.dead_letter_queue) == 0


@pytest.mark.compat
def test_a_torrent_added_by_hand_is_not_managed_and_a_hash_never_seen_is_not_found(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent, polling=FAST))
    by_hand, unknown = random_hash(), random_hash()
    qbittorrent.client().torrents_add(urls=magnet_for(by_hand))
    wait_until(
        lambda: qbittorrent.client().torrents_info(torrent_hashes=by_hand), 10, "the torrent"
    )

    control(broker, names, "remove", by_hand, delete_files=True)
    control(broker, names, "pause", unknown)

    failed = events.wait_for("downloads.failed", count=2, timeout=10)
    reasons = {e["hash"]: (e["reason"], e["command"]) for e in failed}
    assert reasons == {
        by_hand: ("not_managed", "downloads.remove"),
        unknown: ("not_found", "downloads.pause"),
    }
    assert qbittorrent.client().torrents_info(torrent_hashes=by_hand)  # untouched
    assert broker.message_count(names.dead_letter_queue) == 2


def test_a_service_killed_between_qbittorrents_removal_and_the_ack_reports_it_once_after(
    qbittorrent, amqp_url, names, broker, events, tmp_path
):
    proxy = HttpFaultProxy(qbittorrent.url)
    config = service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        proxy.url,
        qbittorrent.password,
        polling=FAST,
        qbittorrent={"timeout_seconds": 60},
    )
    log = tmp_path / "service.log"
    infohash = random_hash()
    process = spawn_service(config, log)
    try:
        send(broker, names, magnet_for(infohash), request_id="doomed")
        events.wait_for("downloads.added", hash=infohash)
        proxy.answer_late_paths.add("/api/v2/torrents/delete")

        control(broker, names, "remove", infohash, delete_files=True)
        wait_until(
            lambda: not qbittorrent.client().torrents_info(torrent_hashes=infohash),
            20,
            "qBittorrent to have removed it",
        )
        process.kill()  # qBittorrent removed it; the service never heard back, nor acked
        process.wait()
        assert events.of("downloads.removed") == []

        proxy.answer_late_paths.clear()
        proxy.release.set()
        process = spawn_service(config, log)
        removed = events.wait_for("downloads.removed", hash=infohash, timeout=20)[0]
        time.sleep(2.0)  # the redelivered remove is handled; polls go by

        assert (removed["reason"], removed["files_deleted"]) == ("command", True)
        assert removed["request_id"] == "doomed"
        assert len(events.of("downloads.removed", hash=infohash)) == 1
        assert broker.message_count(names.command_queue) == 0  # the remove was acked
        assert broker.message_count(names.dead_letter_queue) == 0
        assert sum(c.startswith("/api/v2/torrents/delete") for c in proxy.calls) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        proxy.close()
