"""The state file: tracked downloads and lifecycle events not yet confirmed by the broker.

SQLite (stdlib), WAL mode, one connection serialised by a lock, so there is one writer at a
time whatever thread asks. Two tables:

* ``downloads``: one row per tracked download, with everything needed to resume tracking after
  a restart (its request_id above all).
* ``outbox``: lifecycle events waiting for the broker's confirm. A stage change and the event it
  causes are written in one transaction; the event row is deleted only after the confirm. A
  crash in between repeats the event with the same ``event_id`` instead of losing it.

Two kinds of failure, on purpose:

* A file that cannot be opened or read at start is a ``StateError``: the service refuses to
  start rather than start afresh and forget what it was tracking.
* A write that fails while running (disk full, read-only, I/O error, the file gone) is a
  ``StateUnavailable``: the registry keeps the truth in memory and writes all of it again once
  the file can be written (``reopen`` and ``rewrite``), so a bad disk costs a pause, not a
  crash and not a forgotten download.

One process per state file: ``lock.StateLock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from qbit_consumer.errors import QbitConsumerError

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2

_SCHEMA: Final = """
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
    stalled INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    errored INTEGER NOT NULL DEFAULT 0,
    added_on INTEGER
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    hash TEXT,
    request_id TEXT,
    persistent INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""


class StateError(QbitConsumerError):
    """The state file is unusable; the message is the one line the user sees."""


class StateUnavailable(QbitConsumerError):
    """The state file cannot be written now: disk full, read-only, I/O error, file gone.

    Not fatal, unlike ``StateError``: the cause is outside the service and may go away, and
    the registry holds everything the file should hold. ``reason`` is the short why, for the
    log and the healthcheck.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@attrs.define(slots=True)
class Download:
    """A tracked download as the registry and the state file know it."""

    hash: str
    qbit_id: str
    infohash_v1: str | None
    infohash_v2: str | None
    request_id: str | None
    category: str | None
    name: str | None
    stage: str  # "active" until completed, then "completed"; removed ones are deleted
    last_state: str | None
    last_progress: float | None
    last_completed: int | None
    progress_changed_at: float
    stalled: bool = False
    paused: bool = False
    errored: bool = False
    #: qBittorrent's ``added_on`` of the torrent tracked: tells this download apart from a
    #: later one with the same hash (removed and added again). None until first seen.
    added_on: int | None = None

    @property
    def keys(self) -> set[str]:
        keys = {self.hash, self.qbit_id}
        if self.infohash_v1:
            keys.add(self.infohash_v1)
        if self.infohash_v2:
            keys.update((self.infohash_v2, self.infohash_v2[:40]))
        return keys


@attrs.frozen(kw_only=True)
class StoredEvent:
    """An event in the outbox, exactly as it will be published."""

    seq: int
    event_id: str
    routing_key: str
    hash: str | None
    request_id: str | None
    persistent: bool
    body: bytes


_FIELDS: Final = [f.name for f in attrs.fields(Download)]
_EVENT_FIELDS: Final = [f.name for f in attrs.fields(StoredEvent)]


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _warn_if_empty(path)
            db = self._connect()
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path}: written by a newer qbit-consumer (schema {version}); upgrade it"
                )
            self._migrate(db, version)
            db.execute("SELECT count(*) FROM downloads").fetchone()
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StateError(f"{path}: the state file is damaged ({check})")
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{path}: cannot use the state file ({exc}); it is left as it is: "
                "move it away only if you accept losing track of downloads in progress"
            ) from None
        except OSError as exc:
            raise StateError(f"{path}: cannot open the state file ({exc.strerror})") from None

    def _connect(self) -> sqlite3.Connection:
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-512")  # KiB: small writes, rare reads
        stat = os.stat(self.path)
        self._identity = (stat.st_dev, stat.st_ino)
        return self._db

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        """Writes only when something is missing, so that a file that is already current opens
        on a full disk: the service then starts, and waits for space like a running one."""
        db.executescript(_SCHEMA)
        if version == 1:
            # Schema 1 had no added_on, and an added_at (wall time) that nothing ever read:
            # 32 bytes a download in memory, 320 KB of a NAS's RAM at 10,000 tracked.
            db.execute("ALTER TABLE downloads ADD COLUMN added_on INTEGER")
            db.execute("ALTER TABLE downloads DROP COLUMN added_at")
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    # -- reads (at start) ------------------------------------------------------------------

    def load_downloads(self) -> list[Download]:
        with self._lock:
            assert self._db is not None
            cursor = self._db.execute(f"SELECT {', '.join(_FIELDS)} FROM downloads")  # noqa: S608
            return [compact(Download(**dict(zip(_FIELDS, row, strict=True)))) for row in cursor]

    def load_outbox(self) -> list[StoredEvent]:
        with self._lock:
            assert self._db is not None
            rows = self._db.execute(
                f"SELECT {', '.join(_EVENT_FIELDS)} FROM outbox ORDER BY seq"  # noqa: S608
            ).fetchall()
        return [
            StoredEvent(
                seq=r[0],
                event_id=r[1],
                routing_key=r[2],
                hash=r[3],
                request_id=r[4],
                persistent=bool(r[5]),
                body=bytes(r[6]),
            )
            for r in rows
        ]

    # -- writes ----------------------------------------------------------------------------

    def commit(
        self,
        *,
        upsert: Iterable[Download] = (),
        delete: Iterable[str] = (),
        events: Iterable[StoredEvent] = (),
    ) -> None:
        """One transaction: save downloads, forget removed ones, append events to the outbox.

        Events keep the ``seq`` they were given: the registry numbers them, so that an event
        has its number (and its place in the publish queue) even when this write fails.
        :raises StateUnavailable: nothing was written.
        """
        with self._transaction() as db:
            db.executemany(_UPSERT, [_row(d) for d in upsert])
            db.executemany("DELETE FROM downloads WHERE hash = ?", [(h,) for h in delete])
            db.executemany(_INSERT_EVENT, [attrs.astuple(e) for e in events])

    def rewrite(self, downloads: Iterable[Download], events: Iterable[StoredEvent]) -> None:
        """Replace the whole content, in one transaction: what the registry holds in memory
        after a time when the file could not be written, or after it was deleted.

        :raises StateUnavailable: nothing was written.
        """
        with self._transaction() as db:
            db.execute("DELETE FROM downloads")
            db.executemany(_UPSERT, [_row(d) for d in downloads])
            db.execute("DELETE FROM outbox")
            db.executemany(_INSERT_EVENT, [attrs.astuple(e) for e in events])

    def event_published(self, seq: int) -> None:
        """:raises StateUnavailable: the row stays (the event is repeated after a restart)."""
        with self._writing() as db:
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    # -- the file under the connection -----------------------------------------------------

    def replaced(self) -> bool:
        """Whether the path no longer leads to the file the connection has open.

        SQLite does not notice: it keeps writing to a deleted file's inode, which is gone at
        the next start with everything it held. Comparing device and inode is cheap enough to
        do every few seconds.
        :raises StateUnavailable: the path cannot even be looked at (say, the disk is gone).
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise StateUnavailable(self.path, exc.strerror or str(exc)) from None
        return (stat.st_dev, stat.st_ino) != self._identity

    def reopen(self) -> None:
        """Open what is at the path now (creating it if it is gone), with the schema; the
        caller then ``rewrite``s it.

        The old connection is closed first: closing it deletes its ``-wal`` and ``-shm``
        files by name, which would be the new connection's files if it were opened first, and
        a new connection opened beside the old files would read the old write-ahead log.
        :raises StateUnavailable: it cannot be opened; try again later.
        """
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            try:
                db = self._connect()
                self._migrate(db, db.execute("PRAGMA user_version").fetchone()[0])
            except (sqlite3.DatabaseError, OSError) as exc:
                if self._db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.close()
                    self._db = None
                self._identity = None  # so that ``replaced`` says yes, and this is tried again
                raise StateUnavailable(self.path, _reason(exc)) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """Where the errors of a write enter: the disk's become ``StateUnavailable``; our own
        mistakes (a constraint, a closed connection) stay what they are, as bugs."""
        with self._lock:
            if self._db is None:
                raise StateUnavailable(self.path, "the state file could not be opened")
            try:
                yield self._db
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
                raise
            except (sqlite3.DatabaseError, OSError) as exc:
                raise StateUnavailable(self.path, _reason(exc)) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._writing() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    # A failed rollback leaves nothing to save: SQLite has given up the
                    # transaction already; the original error is the one that matters.
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise


def _warn_if_empty(path: Path) -> None:
    """SQLite takes a zero-byte file for a new database without a word; the self-hoster
    should know that whatever this file held (a failed copy, a full disk) is not tracked."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == 0:
            log.warning(
                "the state file %s is empty (zero bytes): tracking starts empty, as with no "
                "state file; downloads tracked before are not followed any more",
                path,
            )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


_UPSERT: Final = (
    f"INSERT OR REPLACE INTO downloads ({', '.join(_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _FIELDS)})"
)
_INSERT_EVENT: Final = (
    f"INSERT INTO outbox ({', '.join(_EVENT_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _EVENT_FIELDS)})"
)


def compact(download: Download) -> Download:
    """Share equal strings between downloads (memory: 10,000 tracked downloads on a NAS).

    The qBittorrent id and the v1 hash are usually the hash itself, and states, stages and
    categories are a few words repeated.
    """
    if download.qbit_id == download.hash:
        download.qbit_id = download.hash
    if download.infohash_v1 == download.hash:
        download.infohash_v1 = download.hash
    download.stage = sys.intern(download.stage)
    if download.last_state is not None:
        download.last_state = sys.intern(download.last_state)
    if download.category is not None:
        download.category = sys.intern(download.category)
    return download


def _row(download: Download) -> tuple[Any, ...]:
    return tuple(getattr(download, name) for name in _FIELDS)
