"""The state file's migrations, on real files written by the schema-1 and schema-2 code
(tests/data)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import attrs
import pytest

from qbit_consumer.model import Download
from qbit_consumer.tracking import migrations
from qbit_consumer.tracking.migrations import SCHEMA_VERSION
from qbit_consumer.tracking.state import State, StateError

V1_FILE = Path(__file__).parent.parent / "data" / "state-v1.sqlite"
#: Labelled version 2 by the code of 80f2dab to 8a4f4a7, but still with ``added_at NOT NULL``.
V2_WITH_ADDED_AT_FILE = Path(__file__).parent.parent / "data" / "state-v2-with-added_at.sqlite"
V2_ACTIVE = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
ACTIVE = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
DONE = "dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c"
EVENT_ID = "6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e"


@pytest.fixture
def v1_path(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite"
    shutil.copyfile(V1_FILE, path)
    assert user_version(path) == 1  # the fixture is what it claims to be
    return path


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def layout(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Each table's columns: (position, name, type, not null, default, primary key)."""
    db = sqlite3.connect(path)
    try:
        return {
            table: db.execute(f"PRAGMA table_info({table})").fetchall()
            for table in ("downloads", "outbox")
        }
    finally:
        db.close()


def open_and_close(path: Path) -> State:
    state = State(path)
    state.close()
    return state


def test_a_version_1_file_is_upgraded_keeping_its_downloads_and_its_outbox(v1_path):
    state = State(v1_path)
    downloads = {d.hash: d for d in state.load_downloads()}
    events = state.load_outbox()
    state.close()

    assert user_version(v1_path) == SCHEMA_VERSION
    assert set(downloads) == {ACTIVE, DONE}
    active, done = downloads[ACTIVE], downloads[DONE]
    assert (active.request_id, active.stage, active.last_state, active.last_progress) == (
        "req-active-1",
        "active",
        "downloading",
        0.25,
    )
    assert (active.category, active.name, active.progress_changed_at) == (
        "tv",
        "Active Download",
        1764000000.5,
    )
    assert (done.request_id, done.stage, done.last_completed, done.category) == (
        "req-done-2",
        "completed",
        1764000100,
        "movies",
    )
    assert active.added_on is None and done.added_on is None  # learnt at the first poll
    [event] = events
    assert (event.seq, event.event_id, event.routing_key, event.hash, event.request_id) == (
        1,
        EVENT_ID,
        "downloads.completed",
        DONE,
        "req-done-2",
    )
    assert event.persistent is True
    assert event.body.startswith(b'{"schema":1,"event":"downloads.completed"')
    columns = [column[1] for column in layout(v1_path)["downloads"]]
    assert "added_at" not in columns
    assert "added_on" in columns


def test_opening_an_upgraded_file_again_changes_nothing(v1_path):
    open_and_close(v1_path)
    upgraded = v1_path.read_bytes()
    assert not v1_path.with_name(v1_path.name + "-wal").exists()  # all of it is in the file

    open_and_close(v1_path)

    assert v1_path.read_bytes() == upgraded
    assert user_version(v1_path) == SCHEMA_VERSION


def test_migrating_a_current_file_writes_nothing_so_it_opens_on_a_full_disk(v1_path):
    open_and_close(v1_path)
    db = sqlite3.connect(v1_path, isolation_level=None)
    db.execute("PRAGMA query_only=1")  # any write now fails, as on a full disk
    try:
        migrations.migrate(db, SCHEMA_VERSION)
    finally:
        db.close()


def test_a_new_file_gets_the_newest_schema_laid_out_as_an_upgraded_version_1_file(
    tmp_path, v1_path
):
    new = tmp_path / "new.sqlite"
    open_and_close(new)
    open_and_close(v1_path)

    assert user_version(new) == SCHEMA_VERSION
    assert layout(new) == layout(v1_path)
    new_state = State(new)
    assert new_state.load_downloads() == [] and new_state.load_outbox() == []
    new_state.close()


def test_a_file_of_a_newer_schema_is_refused_as_written_by_a_newer_qbit_consumer(tmp_path):
    path = tmp_path / "newer.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()

    with pytest.raises(StateError, match="written by a newer qbit-consumer"):
        State(path)
    assert user_version(path) == SCHEMA_VERSION + 1  # left as it was


def test_a_step_that_fails_midway_leaves_the_file_at_the_version_before_it(v1_path, monkeypatch):
    def add_added_on_then_fail(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE downloads ADD COLUMN added_on INTEGER")
        raise sqlite3.OperationalError("database or disk is full")

    before = layout(v1_path)
    monkeypatch.setattr(migrations, "STEPS", (migrations.STEPS[0], add_added_on_then_fail))
    with pytest.raises(StateError, match="database or disk is full"):
        State(v1_path)

    assert user_version(v1_path) == 1
    assert layout(v1_path) == before  # not half-migrated: no added_on beside added_at
    monkeypatch.undo()
    state = State(v1_path)  # and the next open upgrades it as if nothing had happened
    assert {d.request_id for d in state.load_downloads()} == {"req-active-1", "req-done-2"}
    state.close()


def test_a_new_file_whose_second_step_fails_is_left_at_version_1_and_resumes_from_there(
    tmp_path, v1_path, monkeypatch
):
    def fail(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    path = tmp_path / "new.sqlite"
    schema_1 = layout(v1_path)
    monkeypatch.setattr(migrations, "STEPS", (migrations.STEPS[0], fail))
    with pytest.raises(StateError, match="disk I/O error"):
        State(path)

    assert user_version(path) == 1  # step 1 was committed on its own
    assert layout(path) == schema_1
    monkeypatch.undo()
    open_and_close(path)
    open_and_close(v1_path)
    assert user_version(path) == SCHEMA_VERSION
    assert layout(path) == layout(v1_path)


def test_a_version_0_file_with_the_tables_of_schema_1_is_upgraded(tmp_path, v1_path):
    # What a crash between the schema-1 code's CREATE TABLEs and its user_version=1 left.
    db = sqlite3.connect(v1_path, isolation_level=None)
    db.execute("DELETE FROM downloads")
    db.execute("DELETE FROM outbox")
    db.execute("PRAGMA user_version=0")
    db.close()

    open_and_close(v1_path)
    new = tmp_path / "new.sqlite"
    open_and_close(new)

    assert user_version(v1_path) == SCHEMA_VERSION
    assert layout(v1_path) == layout(new)


def test_a_version_0_file_with_the_tables_of_schema_2_is_opened_keeping_its_downloads(
    v1_path,
):
    # What a crash between the schema-2 code's CREATE TABLEs and its user_version=2 left
    # (rows added here only to show that nothing is lost).
    open_and_close(v1_path)
    db = sqlite3.connect(v1_path, isolation_level=None)
    db.execute("PRAGMA user_version=0")
    db.close()
    upgraded = layout(v1_path)

    state = State(v1_path)
    assert len(state.load_downloads()) == 2
    state.close()
    assert user_version(v1_path) == SCHEMA_VERSION
    assert layout(v1_path) == upgraded


def test_a_negative_schema_version_is_refused(tmp_path):
    path = tmp_path / "odd.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=-1")
    db.close()

    with pytest.raises(StateError, match="unknown schema version -1"):
        State(path)
    assert user_version(path) == -1


def test_a_version_2_file_that_still_has_added_at_is_upgraded_and_can_be_written(tmp_path):
    path = tmp_path / "state.sqlite"
    shutil.copyfile(V2_WITH_ADDED_AT_FILE, path)
    assert user_version(path) == 2  # the fixture is what it claims to be
    assert "added_at" in [column[1] for column in layout(path)["downloads"]]

    state = State(path)
    try:
        [kept] = state.load_downloads()
        assert (kept.hash, kept.request_id, kept.stage, kept.added_on) == (
            V2_ACTIVE,
            "req-v2-active",
            "active",
            1764099000,
        )
        # Before schema 3 this write failed: NOT NULL constraint failed: downloads.added_at.
        state.commit(
            upsert=[
                attrs.evolve(kept, last_progress=0.75),
                Download.added(hash=ACTIVE, qbit_id=ACTIVE, request_id="req-new"),
            ]
        )
    finally:
        state.close()

    assert user_version(path) == SCHEMA_VERSION
    assert "added_at" not in [column[1] for column in layout(path)["downloads"]]
    state = State(path)
    downloads = {d.hash: d for d in state.load_downloads()}
    state.close()
    assert {h: (d.request_id, d.last_progress) for h, d in downloads.items()} == {
        V2_ACTIVE: ("req-v2-active", 0.75),
        ACTIVE: ("req-new", None),
    }
