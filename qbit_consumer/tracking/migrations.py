"""The state file's schema, as the ordered steps that build it.

Why steps, and not one ``CREATE TABLE IF NOT EXISTS`` of the newest layout: a file written by
an older qbit-consumer holds downloads in progress (their request_id above all), and a
``CREATE ... IF NOT EXISTS`` leaves a table of an older layout as it is. Each step turns a file
of the version before it into one of its own version; a file reaches the newest version by the
steps after its own, and a new file (version 0, no tables) by all of them. New and upgraded
files go through the same code, so they cannot drift apart.

The version is the file's ``PRAGMA user_version``. Each step runs in a transaction of its own
together with setting ``user_version`` to its version: a crash, a full disk or a failing
statement leaves the file at the last version completed, never half-way, and the next open
goes on from there.

To change the schema, append a step to ``STEPS``. A step's version is its position, counted
from 1, and ``SCHEMA_VERSION`` is the last one: nothing else is bumped by hand. Never edit,
remove or reorder a step that has been released: files in the field were made by it. A step
runs inside the transaction, so it calls ``db.execute`` statement by statement, never
``executescript`` (which commits first).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Final

Step = Callable[[sqlite3.Connection], None]

# Version 1, exactly as the code of schema 1 created it (7dd425b and 053e96b,
# qbit_consumer/state.py).
#
# What history shows about files at user_version 0 that already have tables: the schema-1 code
# always set user_version=1, on every open, but not atomically: it ran its CREATE TABLE IF NOT
# EXISTS script (each statement committed on its own) and only then ``PRAGMA user_version=1``.
# A crash or a failed write (a full disk) in between left a file at version 0 holding one or
# both tables, and no rows (rows were written only after an open that succeeded). The schema-2
# code before this module did the same with its own script, so such a file may also hold the
# schema-2 tables: with both added_at and added_on (80f2dab to 8a4f4a7), or with added_on only
# (18896e0 on). Hence ``IF NOT EXISTS`` here (keep what is there, create what is missing), and
# step 2 looking at the columns before changing them. ``outbox`` is the same in every version.
_SCHEMA_1: Final = (
    """
    CREATE TABLE IF NOT EXISTS downloads (
        hash TEXT PRIMARY KEY,
        qbit_id TEXT NOT NULL,
        infohash_v1 TEXT,
        infohash_v2 TEXT,
        request_id TEXT,
        category TEXT,
        name TEXT,
        stage TEXT NOT NULL,
        last_state TEXT,
        last_progress REAL,
        last_completed INTEGER,
        progress_changed_at REAL NOT NULL,
        added_at REAL NOT NULL,
        stalled INTEGER NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0,
        errored INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        routing_key TEXT NOT NULL,
        hash TEXT,
        request_id TEXT,
        persistent INTEGER NOT NULL,
        body BLOB NOT NULL
    )
    """,
)


def _tables_of_schema_1(db: sqlite3.Connection) -> None:
    """Schema 1 is where a new file starts, so that it is built by the same steps as an old one
    is upgraded by, and the two end alike."""
    for statement in _SCHEMA_1:
        db.execute(statement)


def _added_on_instead_of_added_at(db: sqlite3.Connection) -> None:
    """Schema 2: qBittorrent's ``added_on`` tells a tracked download apart from a later one with
    the same hash (removed and added again); ``added_at`` (wall time) was never read, and cost
    32 bytes a download in memory, 320 KB of a NAS's RAM at 10,000 tracked.

    Each change is made only if still needed: a version-0 file left by schema-2 code (see
    ``_SCHEMA_1``) has ``added_on`` already, and perhaps no ``added_at``.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(downloads)")}
    if "added_on" not in columns:
        db.execute("ALTER TABLE downloads ADD COLUMN added_on INTEGER")
    if "added_at" in columns:
        db.execute("ALTER TABLE downloads DROP COLUMN added_at")


def _without_added_at(db: sqlite3.Connection) -> None:
    """Schema 3: the schema-2 code of 80f2dab to 8a4f4a7 labelled its files version 2 while
    they still had ``added_at REAL NOT NULL``, which today's rows do not fill: the first write
    to such a file failed its constraint. Schema 3 is schema 2 as it was meant to be. Written
    out, not a call of step 2: a released step never changes, and this one must not change
    with it."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(downloads)")}
    if "added_on" not in columns:
        db.execute("ALTER TABLE downloads ADD COLUMN added_on INTEGER")
    if "added_at" in columns:
        db.execute("ALTER TABLE downloads DROP COLUMN added_at")


def _commands_pending_and_gone(db: sqlite3.Connection) -> None:
    """Schema 4, for remove/pause/resume: a download's ``pending`` command (asked of
    qBittorrent, not seen done yet), and ``gone``, every id of a download whose tracking ended
    and when: a remove repeated after its download was reported removed is acked, not
    dead-lettered ``not_found``."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(downloads)")}
    if "pending" not in columns:  # like the steps before it: only what is still missing
        db.execute("ALTER TABLE downloads ADD COLUMN pending TEXT")
    db.execute("CREATE TABLE IF NOT EXISTS gone (key TEXT PRIMARY KEY, at REAL NOT NULL)")


#: Step n (counted from 1) turns a file of version n - 1 into one of version n.
STEPS: Final[tuple[Step, ...]] = (
    _tables_of_schema_1,
    _added_on_instead_of_added_at,
    _without_added_at,
    _commands_pending_and_gone,
)

SCHEMA_VERSION: Final = len(STEPS)


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a file at schema ``version`` to ``SCHEMA_VERSION``.

    Writes nothing when the file is current, so that a current file opens on a full disk: the
    service then starts, and waits for space like a running one.

    ``db`` must be in autocommit mode (``isolation_level=None``): the transactions are these.
    A version newer than ``SCHEMA_VERSION`` is for the caller to refuse, with a message that
    names the cause (``State`` does); here it, like a negative one, is only an error, so that
    no path (``State.reopen`` does not check) labels such a file with an older version.
    :raises sqlite3.DatabaseError: the failing step wrote nothing; the file is at the last
        version completed.
    """
    if not 0 <= version <= SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"unknown schema version {version}")
    for target, step in enumerate(STEPS[version:], start=version + 1):
        with transaction(db):
            step(db)
            db.execute(f"PRAGMA user_version={target}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection: committed when the block ends,
    rolled back when it raises (the state file's writes use it too)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            # A failed rollback leaves nothing to undo: SQLite has given the transaction up
            # already, and the block's error is the one that tells what happened.
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
