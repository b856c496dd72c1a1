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
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from qbit_consumer.contract.events import Envelope
from qbit_consumer.errors import StateCorrupt, StateError, StateUnavailable
from qbit_consumer.model import Download, compact
from qbit_consumer.tracking.access import refusal
from qbit_consumer.tracking.migrations import SCHEMA_VERSION, migrate, transaction

log = logging.getLogger(__name__)

#: How long the ids of a download whose tracking ended are kept (``was_tracked``).
GONE_KEPT_SECONDS: Final = 90 * 86_400

_FIELDS: Final = [f.name for f in attrs.fields(Download)]
#: What a refusal to start on a corrupt file tells the user to do.
_RECOVER: Final = (
    "; it is left as it is: `qbit-consumer recover` moves it aside and rebuilds the tracked "
    "downloads from history"
)
_EVENT_FIELDS: Final = (
    "seq",
    "event_id",
    "routing_key",
    "hash",
    "request_id",
    "persistent",
    "body",
)


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _refuse_unwritable(path)
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
                raise StateCorrupt(f"{path}: the state file is damaged ({check}){_RECOVER}")
        except sqlite3.DatabaseError as exc:
            raise StateCorrupt(f"{path}: cannot use the state file ({exc}){_RECOVER}") from None
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
        """Writes nothing when the file is current (``migrations.migrate``), so that it opens on
        a full disk: the service then starts, and waits for space like a running one."""
        migrate(db, version)

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

    def load_outbox(self) -> list[Envelope]:
        with self._lock:
            assert self._db is not None
            rows = self._db.execute(
                f"SELECT {', '.join(_EVENT_FIELDS)} FROM outbox ORDER BY seq"  # noqa: S608
            ).fetchall()
        return [
            Envelope(
                seq=seq,
                event_id=event_id,
                routing_key=routing_key,
                hash=hash_,
                request_id=request_id,
                persistent=bool(persistent),
                body=bytes(body),
            )
            for seq, event_id, routing_key, hash_, request_id, persistent, body in rows
        ]

    # -- writes ----------------------------------------------------------------------------

    def was_tracked(self, keys: Iterable[str]) -> bool:
        """Whether a download known by any of ``keys`` was tracked and its tracking ended
        within ``GONE_KEPT_SECONDS``."""
        wanted = list(keys)
        with self._lock:
            assert self._db is not None
            row = self._db.execute(
                f"SELECT 1 FROM gone WHERE key IN ({', '.join('?' for _ in wanted)})",  # noqa: S608
                wanted,
            ).fetchone()
        return row is not None

    def commit(
        self,
        *,
        upsert: Iterable[Download] = (),
        delete: Iterable[Download] = (),
        events: Iterable[Envelope] = (),
    ) -> None:
        """One transaction: save downloads, forget removed ones (their ids kept in ``gone``),
        append events to the outbox.

        Events keep the ``seq`` they were given: the registry numbers them, so that an event
        has its number (and its place in the publish queue) even when this write fails.
        :raises StateUnavailable: nothing was written.
        """
        delete = list(delete)
        now = time.time()
        with self._transaction() as db:
            db.executemany(_UPSERT, [_row(d) for d in upsert])
            db.executemany("DELETE FROM downloads WHERE hash = ?", [(d.hash,) for d in delete])
            if delete:
                db.executemany(
                    "INSERT OR REPLACE INTO gone (key, at) VALUES (?, ?)",
                    [(key, now) for d in delete for key in d.keys],
                )
                db.execute("DELETE FROM gone WHERE at < ?", (now - GONE_KEPT_SECONDS,))
            db.executemany(_INSERT_EVENT, [_event_row(e) for e in events])

    def rewrite(self, downloads: Iterable[Download], events: Iterable[Envelope]) -> None:
        """Replace the whole content, in one transaction: what the registry holds in memory
        after a time when the file could not be written, or after it was deleted.

        :raises StateUnavailable: nothing was written.
        """
        with self._transaction() as db:
            db.execute("DELETE FROM downloads")
            db.executemany(_UPSERT, [_row(d) for d in downloads])
            db.execute("DELETE FROM outbox")
            db.executemany(_INSERT_EVENT, [_event_row(e) for e in events])

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
        with self._writing() as db, transaction(db):
            yield db


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


def _row(download: Download) -> tuple[Any, ...]:
    return tuple(getattr(download, name) for name in _FIELDS)


def _event_row(event: Envelope) -> tuple[Any, ...]:
    assert event.seq is not None, "only numbered (lifecycle) events go to the outbox"
    return tuple(getattr(event, name) for name in _EVENT_FIELDS)


def _refuse_unwritable(path: Path) -> None:
    """SQLite opens a file it may not write read-only, without a word, and the first write
    then says "attempt to write a readonly database": a file (or folder, for the WAL) that
    belongs to another uid is named, with the fix, before that."""
    for where in (path, path.parent):
        if where.exists() and not os.access(where, os.W_OK):
            raise StateError(refusal(where, PermissionError(errno.EACCES, "Permission denied")))
