"""The state file: tracked downloads and lifecycle events not yet confirmed by the broker.

SQLite (stdlib), WAL mode, one connection serialised by a lock, so there is one writer at a
time whatever thread asks. Two tables:

* ``downloads``: one row per tracked download, with everything needed to resume tracking after
  a restart (its request_id above all).
* ``outbox``: lifecycle events waiting for the broker's confirm. A stage change and the event it
  causes are written in one transaction; the event row is deleted only after the confirm. A
  crash in between repeats the event with the same ``event_id`` instead of losing it.

A file that cannot be opened or read is a ``StateError``: the service refuses to start rather
than start afresh and forget what it was tracking.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from qbit_consumer.errors import QbitConsumerError

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
    added_at REAL NOT NULL,
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
    added_at: float
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


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-512")  # KiB: small writes, rare reads
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path}: written by a newer qbit-consumer (schema {version}); upgrade it"
                )
            self._db.executescript(_SCHEMA)
            if version == 1:  # schema 1 had no added_on
                self._db.execute("ALTER TABLE downloads ADD COLUMN added_on INTEGER")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("SELECT count(*) FROM downloads").fetchone()
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StateError(f"{path}: the state file is damaged ({check})")
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{path}: cannot use the state file ({exc}); it is left as it is: "
                "move it away only if you accept losing track of downloads in progress"
            ) from None
        except OSError as exc:
            raise StateError(f"{path}: cannot open the state file ({exc.strerror})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads (at start) ------------------------------------------------------------------

    def load_downloads(self) -> list[Download]:
        with self._lock:
            cursor = self._db.execute(f"SELECT {', '.join(_FIELDS)} FROM downloads")  # noqa: S608
            return [compact(Download(**dict(zip(_FIELDS, row, strict=True)))) for row in cursor]

    def load_outbox(self) -> list[StoredEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, routing_key, hash, request_id, persistent, body "
                "FROM outbox ORDER BY seq"
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
        events: Iterable[tuple[str, str, str | None, str | None, bool, bytes]] = (),
    ) -> list[int]:
        """One transaction: save downloads, forget removed ones, append events to the outbox.

        ``events`` are (event_id, routing_key, hash, request_id, persistent, body); the
        returned list holds their outbox sequence numbers, in order.
        """
        seqs: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    f"INSERT OR REPLACE INTO downloads ({', '.join(_FIELDS)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' for _ in _FIELDS)})",
                    [_row(d) for d in upsert],
                )
                self._db.executemany("DELETE FROM downloads WHERE hash = ?", [(h,) for h in delete])
                for event in events:
                    cursor = self._db.execute(
                        "INSERT INTO outbox (event_id, routing_key, hash, request_id, "
                        "persistent, body) VALUES (?, ?, ?, ?, ?, ?)",
                        event,
                    )
                    seqs.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return seqs

    def event_published(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))


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
