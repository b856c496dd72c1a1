from __future__ import annotations

import logging
import os
import sqlite3

import attrs
import pytest

from qbit_consumer.contract.events import Completed
from qbit_consumer.contract.magnet import parse_magnet
from qbit_consumer.model import Download
from qbit_consumer.tracking.lock import StateLock
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State, StateError

H = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"


def completed_event() -> Completed:
    return Completed(
        request_id="r",
        hash=H,
        infohash_v2=None,
        name="x",
        category="tv",
        size=1,
        save_path="/d",
        content_path="/d/x",
        completed_at="2026-01-01T00:00:00Z",
    )


def test_tracked_downloads_and_unconfirmed_events_survive_a_restart_with_the_same_event_id(
    tmp_path,
):
    path = tmp_path / "s.sqlite3"
    registry = Registry(State(path), PublishQueue())
    assert (
        registry.track([Download.added(hash=H, request_id="r", category="tv", name="x", qbit_id=H)])
        == 1
    )
    download = registry.snapshot()[0]
    download.stage = "completed"
    event = completed_event()
    registry.record(updated=[download], persist=[H], events=[event])
    # ...and the process dies before the broker confirmed the event.

    queue = PublishQueue()
    again = Registry(State(path), queue)
    assert again.snapshot()[0].stage == "completed"
    assert again.snapshot()[0].request_id == "r"
    assert again.restore_outbox() == 1
    [item] = queue.take()
    assert item.event_id == event.event_id and item.body == event.to_json()

    again.event_published(item.seq)
    assert Registry(State(path), PublishQueue()).restore_outbox() == 0


def test_a_duplicate_does_not_restart_tracking(tmp_path):
    registry = Registry(State(tmp_path / "s.sqlite3"), PublishQueue())
    magnet = parse_magnet(f"magnet:?xt=urn:btih:{H}")
    assert (
        registry.track(
            [
                Download.added(
                    hash=magnet.hash, request_id="first", category="tv", name="x", qbit_id=H
                )
            ]
        )
        == 1
    )
    assert (
        registry.track(
            [
                Download.added(
                    hash=magnet.hash, request_id="second", category="tv", name="x", qbit_id=H
                )
            ]
        )
        == 0
    )
    assert registry.snapshot()[0].request_id == "first"


def test_a_corrupt_state_file_is_an_error_not_a_fresh_start(tmp_path):
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StateError) as info:
        State(path)
    assert str(path) in str(info.value) and "left as it is" in str(info.value)
    assert path.read_bytes().startswith(b"this is not")


def test_a_state_file_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "s.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StateError, match="newer qbit-consumer"):
        State(path)


def test_an_unwritable_state_directory_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError):
        State(blocker / "sub" / "s.sqlite3")


def track(registry, *hashes):
    return registry.track(
        [
            Download.added(hash=h, request_id=f"r-{h[:4]}", category="tv", name="x", qbit_id=h)
            for h in hashes
        ]
    )


def read_file(path):
    """What a restart would find: the file itself, not the registry's memory."""
    state = State(path)
    try:
        return {d.hash for d in state.load_downloads()}, state.load_outbox()
    finally:
        state.close()


def test_a_zero_byte_state_file_is_a_fresh_start_with_a_warning(tmp_path, caplog):
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="qbit_consumer"):
        registry = Registry(State(path), PublishQueue())
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage()
    assert "tracking starts empty" in warning.getMessage()
    assert len(registry) == 0 and track(registry, H) == 1


def test_a_missing_state_file_is_a_fresh_start_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="qbit_consumer"):
        State(tmp_path / "s.sqlite3")
    assert caplog.records == []


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_state_file_deleted_or_replaced_while_running_is_written_again_in_full(
    tmp_path, caplog, how
):
    path = tmp_path / "s.sqlite3"
    queue = PublishQueue()
    registry = Registry(State(path), queue)
    other = "d" * 40
    track(registry, H, other)
    registry.record(events=[completed_event()])
    [item] = queue.take()
    registry.maintain()
    assert caplog.records == []  # nothing happened: nothing to say

    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink()
    else:  # say, an empty file moved over it; its -wal and -shm are still the old file's
        (tmp_path / "empty").write_bytes(b"")
        os.replace(tmp_path / "empty", path)
    with caplog.at_level(logging.WARNING, logger="qbit_consumer"):
        registry.maintain()

    [warning] = caplog.records
    assert "deleted or replaced" in warning.getMessage() and str(path) in warning.getMessage()
    downloads, outbox = read_file(path)
    assert downloads == {H, other}
    assert [(e.seq, e.event_id) for e in outbox] == [(item.seq, item.event_id)]
    registry.event_published(item.seq)  # the publish queue's number still names the row
    assert read_file(path)[1] == []
    assert registry.problem is None and registry.writable.is_set()


def test_event_numbers_go_on_after_a_restart_so_they_never_collide(tmp_path):
    path = tmp_path / "s.sqlite3"
    state = State(path)
    Registry(state, PublishQueue()).record(events=[completed_event(), completed_event()])
    state.close()

    queue = PublishQueue()
    registry = Registry(State(path), queue)
    assert registry.restore_outbox() == 2
    registry.record(events=[completed_event()])
    assert [item.seq for item in queue.take(10)] == [1, 2, 3]
    assert [e.seq for e in read_file(path)[1]] == [1, 2, 3]


def test_one_process_per_state_file(tmp_path):
    path = tmp_path / "s.sqlite3"
    first = StateLock(path)
    try:
        with pytest.raises(StateError) as info:
            StateLock(path)
        assert str(info.value).startswith(f"{path} is in use by process {os.getpid()} ")
    finally:
        first.release()
    StateLock(path).release()  # free again once released


def test_a_schema_1_state_file_is_migrated_keeping_its_downloads(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE downloads (
            hash TEXT PRIMARY KEY, qbit_id TEXT NOT NULL, infohash_v1 TEXT, infohash_v2 TEXT,
            request_id TEXT, category TEXT, name TEXT, stage TEXT NOT NULL, last_state TEXT,
            last_progress REAL, last_completed INTEGER, progress_changed_at REAL NOT NULL,
            added_at REAL NOT NULL, stalled INTEGER NOT NULL DEFAULT 0,
            paused INTEGER NOT NULL DEFAULT 0, errored INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
            routing_key TEXT NOT NULL, hash TEXT, request_id TEXT, persistent INTEGER NOT NULL,
            body BLOB NOT NULL
        );
        PRAGMA user_version=1;
        """
    )
    db.execute(
        "INSERT INTO downloads VALUES (?, ?, ?, NULL, 'r1', 'tv', 'x', 'completed', 'uploading',"
        " 1.0, 5, 1.0, 1.0, 0, 0, 0)",
        (H, H, H),
    )
    db.commit()
    db.close()

    state = State(path)
    [download] = state.load_downloads()
    assert (download.hash, download.request_id, download.stage) == (H, "r1", "completed")
    assert download.added_on is None  # learnt at its first poll
    state.commit(upsert=[attrs.evolve(download, added_on=1_700_000_000)])
    state.close()
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(downloads)")]
    assert "added_on" in columns and "added_at" not in columns
    assert State(path).load_downloads()[0].added_on == 1_700_000_000
