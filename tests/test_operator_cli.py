"""`send`, `watch` and `dlq list|replay`, run as a self-hoster would, on the real services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash, run_cli

pytestmark = pytest.mark.live


def test_send_publishes_a_command_and_refuses_one_the_service_would_dead_letter(
    qbittorrent, make_config, start_service, broker, names, events
):
    cfg = make_config(qbittorrent)
    start_service(cfg)
    infohash = random_hash()

    sent = run_cli(
        "send",
        magnet_for(infohash),
        "--category",
        "movies",
        "--request-id",
        "cli-1",
        "--tag",
        "from-cli",
        "--config",
        cfg.source,
    )
    assert sent.returncode == 0, sent.stderr
    added = events.wait_for("downloads.added", hash=infohash)[0]
    assert added["request_id"] == "cli-1"
    assert "from-cli" in qbittorrent.client().torrents_info(torrent_hashes=infohash)[0].tags

    refused = run_cli(
        "send", magnet_for(random_hash()), "--category", "nope", "--config", cfg.source
    )
    assert refused.returncode == 1
    assert "invalid_category" in refused.stderr
    time.sleep(0.5)
    assert events.of("downloads.received", category=None) == []
    assert broker.message_count(names.command_queue) == 0


def test_send_pause_resume_and_remove_by_hash_with_delete_files(
    qbittorrent, make_config, start_service, broker, names, events
):
    cfg = make_config(qbittorrent, polling={"interval_seconds": 0.25})
    start_service(cfg)
    infohash = random_hash()
    assert (
        run_cli("send", magnet_for(infohash), "--category", "tv", "--config", cfg.source).returncode
        == 0
    )
    events.wait_for("downloads.added", hash=infohash)

    paused = run_cli("send", "pause", infohash.upper(), "--config", cfg.source)
    assert paused.returncode == 0, paused.stderr
    assert "sent downloads.pause" in paused.stdout
    assert events.wait_for("downloads.paused", hash=infohash)[0]["by"] == "command"
    assert run_cli("send", "resume", infohash, "--config", cfg.source).returncode == 0
    assert events.wait_for("downloads.resumed", hash=infohash)[0]["by"] == "command"
    removed = run_cli(
        "send",
        "remove",
        infohash,
        "--delete-files",
        "--request-id",
        "cli-rm",
        "--config",
        cfg.source,
    )
    assert removed.returncode == 0, removed.stderr
    gone = events.wait_for("downloads.removed", hash=infohash)[0]
    assert (gone["reason"], gone["files_deleted"], gone["request_id"]) == (
        "command",
        True,
        "cli-rm",
    )

    for wrong, says in [
        (["send", "pause", infohash, "--delete-files"], "--delete-files goes with send remove"),
        (["send", "remove"], "takes one HASH"),
        (["send", magnet_for(random_hash())], "needs --category"),
    ]:
        refused = run_cli(*wrong, "--config", cfg.source)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    bad_hash = run_cli("send", "remove", "abc", "--config", cfg.source)
    assert bad_hash.returncode == 1 and "invalid_message" in bad_hash.stderr
    time.sleep(0.5)
    assert broker.message_count(names.dead_letter_queue) == 0


def test_watch_prints_one_readable_line_per_event_with_a_progress_bar(
    qbittorrent, make_config, start_service, broker, names, events
):
    cfg = make_config(qbittorrent, polling={"interval_seconds": 0.25})
    start_service(cfg)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "qbit_consumer", "watch", "--config", cfg.source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        time.sleep(1.5)  # its queue is bound
        infohash = random_hash()
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps(
                {"magnet": magnet_for(infohash, "Watched Film"), "category": "movies"}
            ).encode(),
        )
        events.wait_for("downloads.progress", hash=infohash, count=2)
        time.sleep(0.5)
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert any(" received " in line and "Watched Film" in line for line in lines), out
    assert any(" added " in line and "[movies]" in line for line in lines), out
    assert any(
        " progress " in line and "[--------------------]   0.0%" in line and "metaDL" in line
        for line in lines
    ), out


def test_dlq_list_shows_why_and_replay_moves_chosen_commands_back_once_fixed(
    qbittorrent, make_config, start_service, broker, names, events
):
    cfg = make_config(qbittorrent)
    service = start_service(cfg)
    hashes = [random_hash() for _ in range(3)]
    for number, infohash in enumerate(hashes):
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(infohash), "category": "anime"}).encode(),
            message_id=f"m{number}",
        )
    wait_until(lambda: broker.message_count(names.dead_letter_queue) == 3, 15, "3 dead letters")

    listed = run_cli("dlq", "list", "--config", cfg.source)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("invalid_category") == 3
    assert "#1" in listed.stdout and "#3" in listed.stdout and "id=m0" in listed.stdout
    assert "'anime' is not one of" in listed.stdout
    wait_until(lambda: broker.message_count(names.dead_letter_queue) == 3, 5, "them to stay")

    # The self-hoster adds the category and restarts the service, then replays.
    service.stop()
    fixed = make_config(qbittorrent, categories={"movies": "", "tv": "", "anime": ""})
    start_service(fixed)
    one = run_cli("dlq", "replay", "2", "--config", fixed.source)
    assert one.returncode == 0, one.stderr
    assert "1 command(s) moved back" in one.stdout
    replayed = events.wait_for("downloads.added", category="anime")
    assert len(replayed) == 1
    assert broker.message_count(names.dead_letter_queue) == 2

    rest = run_cli("dlq", "replay", "--all", "--config", fixed.source)
    assert "2 command(s) moved back" in rest.stdout
    added = events.wait_for("downloads.added", category="anime", count=3)
    assert {e["hash"] for e in added} == set(hashes)
    assert broker.message_count(names.dead_letter_queue) == 0
    assert "is empty" in run_cli("dlq", "list", "--config", fixed.source).stdout
