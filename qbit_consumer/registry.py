"""The registry of tracked downloads, shared by the consumer and the poller threads.

In memory for speed, behind one lock that is never held across network I/O; every change
that matters after a restart is written to the state file in the same critical section.
Lifecycle events enter the outbox in the same transaction as the change that caused them,
then the publish queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import attrs

from qbit_consumer.events import Event
from qbit_consumer.magnet import Magnet
from qbit_consumer.publisher import Item, PublishQueue
from qbit_consumer.state import Download, State, compact


@attrs.frozen(kw_only=True)
class Tracked:
    """What the consumer knows of a download it just added."""

    request_id: str | None
    category: str | None
    name: str | None
    qbit_id: str
    infohash_v2: str | None
    #: qBittorrent's added_on: which incarnation of the hash this is.
    added_on: int | None = None


class Registry:
    def __init__(self, state: State, queue: PublishQueue) -> None:
        self._state = state
        self._queue = queue
        self._lock = threading.Lock()
        self._downloads = {d.hash: d for d in state.load_downloads()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._downloads)

    def restore_outbox(self) -> int:
        """Queue the events a previous run stored but did not see confirmed (same event_id)."""
        stored = self._state.load_outbox()
        self._queue.put_lifecycle([Item.stored(event) for event in stored])
        return len(stored)

    def track(self, added: list[tuple[Magnet, Tracked]]) -> int:
        """Start tracking downloads that were just added, in one state-file transaction.

        One already tracked is left alone: a duplicate command does not restart a download's
        lifecycle. Returns how many are new.
        """
        now = time.time()
        with self._lock:
            new: dict[str, Download] = {}
            for magnet, tracked in added:
                if magnet.hash in self._downloads or magnet.hash in new:
                    continue
                new[magnet.hash] = compact(
                    Download(
                        hash=magnet.hash,
                        qbit_id=tracked.qbit_id,
                        infohash_v1=magnet.infohash_v1,
                        infohash_v2=magnet.infohash_v2 or tracked.infohash_v2,
                        request_id=tracked.request_id,
                        category=tracked.category,
                        name=tracked.name,
                        stage="active",
                        last_state=None,
                        last_progress=None,
                        last_completed=None,
                        progress_changed_at=now,
                        added_at=now,
                        added_on=tracked.added_on,
                    )
                )
            if new:
                self._state.commit(upsert=new.values())
                self._downloads.update(new)
            return len(new)

    def snapshot(self) -> list[Download]:
        """The tracked downloads, for the poller to compare outside the lock. Not copies (with
        10,000 tracked, copies cost megabytes a cycle): the poller never changes them, it
        makes changed ones with ``attrs.evolve`` and hands them to ``record``."""
        with self._lock:
            return list(self._downloads.values())

    def get(self, key: str) -> Download | None:
        with self._lock:
            download = self._downloads.get(key)
            return attrs.evolve(download) if download else None

    def record(
        self,
        *,
        updated: Iterable[Download] = (),
        persist: Iterable[str] = (),
        removed: Iterable[str] = (),
        events: Iterable[Event] = (),
    ) -> None:
        """Apply the poller's findings: ``updated`` replace what is in memory (those named in
        ``persist`` are also written), ``removed`` are forgotten, ``events`` are stored and
        queued, all in one state-file transaction."""
        updated = list(updated)
        persist = set(persist)
        removed = set(removed)
        events = list(events)
        rows = [
            (e.event_id, e.routing_key, e.hash, e.request_id, e.persistent, e.to_json())
            for e in events
        ]
        with self._lock:
            current = [d for d in updated if d.hash in self._downloads and d.hash not in removed]
            upsert = [d for d in current if d.hash in persist]
            delete = [h for h in removed if h in self._downloads]
            seqs = (
                self._state.commit(upsert=upsert, delete=delete, events=rows)
                if upsert or delete or rows
                else []
            )
            for download in current:
                self._downloads[download.hash] = download
            for key in removed:
                self._downloads.pop(key, None)
            # Queued under the lock, so the order of events matches the order of changes.
            self._queue.put_lifecycle(
                [
                    Item(row[1], row[5], row[0], row[2], row[3], row[4], seq)
                    for row, seq in zip(rows, seqs, strict=True)
                ]
            )

    def event_published(self, seq: int) -> None:
        self._state.event_published(seq)
