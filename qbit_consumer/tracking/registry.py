"""The registry of tracked downloads, shared by the consumer and the poller threads.

In memory for speed, behind one lock that is never held across network I/O; every change
that matters after a restart is written to the state file in the same critical section.
Lifecycle events enter the outbox in the same transaction as the change that caused them,
then the publish queue.

The memory is the truth, the file its copy. When the file cannot be written (disk full,
read-only, gone) a change is still applied in memory and its events still go to the publish
queue, numbered by the registry's own counter; ``writable`` is cleared so that the consumer
takes no command meanwhile (a command it took could not be tracked); ``maintain``, called every
few seconds, writes everything again (every tracked download and every event not yet
confirmed, with its number) as soon as it can. A state file deleted or replaced while running is
noticed there too and written again in full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import attrs

from qbit_consumer.contract.events import Envelope, Event
from qbit_consumer.errors import StateUnavailable
from qbit_consumer.model import Download
from qbit_consumer.tracking import lifecycle
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.state import State

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class StateProblem:
    """Why the state file cannot be written, and since when (``time.monotonic()``)."""

    path: str
    reason: str
    since: float


class Registry:
    def __init__(self, state: State, queue: PublishQueue) -> None:
        self._state = state
        self._queue = queue
        self._lock = threading.Lock()
        downloads = state.load_downloads()
        # A stored stall timer is a time.monotonic() of the previous run, meaningless in this
        # one: it starts again (a download stalled across a restart is reported that much later).
        started = time.monotonic()
        for download in downloads:
            download.progress_changed_at = started
        self._downloads = {d.hash: d for d in downloads}
        #: Lifecycle events not confirmed by the broker yet, by number: what the outbox must
        #: hold when the file is written again from memory.
        self._unconfirmed = {event.seq: event for event in state.load_outbox()}
        #: Downloads a remove/pause/resume command has in hand (``intend`` to ``commanded``),
        #: and those commands changed since the poller's last ``poll_snapshot``.
        self._busy: set[str] = set()
        self._touched: set[str] = set()
        self._last_seq = max(self._unconfirmed, default=0)
        self._problem: StateProblem | None = None
        #: Set while the state file can be written: commands are taken only then.
        self.writable = threading.Event()
        self.writable.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._downloads)

    def status_counts(self) -> tuple[int, int, int]:
        """For the status message: (downloads tracked, of them not complete yet, lifecycle
        events not confirmed by the broker yet). A walk of the tracked set once a status
        interval: 10,000 downloads take about a millisecond."""
        with self._lock:
            active = sum(1 for d in self._downloads.values() if d.stage == "active")
            return len(self._downloads), active, len(self._unconfirmed)

    def restore_outbox(self) -> int:
        """Queue the events a previous run stored but did not see confirmed (same event_id)."""
        with self._lock:
            stored = [self._unconfirmed[seq] for seq in sorted(self._unconfirmed)]
            self._queue.put_lifecycle(stored)
        return len(stored)

    def track(self, added: list[Download]) -> int:
        """Start tracking downloads that were just added, in one state-file transaction.

        One already tracked is left alone: a duplicate command does not restart a download's
        lifecycle. Unless qBittorrent's torrent is a later one than the tracked one (another
        ``added_on``: removed and added again before the poller noticed): then the tracked one
        is reported removed and the new one takes its place, in the same transaction. Returns
        how many are new.

        :raises StateUnavailable: the state file cannot be written; nothing changed, in memory
            either. The caller keeps the commands unacknowledged and calls again once
            ``writable`` is set: a download tracked in memory only would be forgotten by a
            restart, while an unacknowledged command comes back and is tracked then.
        """
        with self._lock:
            new: dict[str, Download] = {}
            gone: list[Download] = []
            for download in added:
                if download.hash in new:
                    continue
                held = self._downloads.get(download.hash)
                if held is not None:
                    if not lifecycle.replaced(held.added_on, download.added_on):
                        continue
                    gone.append(held)
                new[download.hash] = download
            if new:
                if self._problem is not None:
                    raise StateUnavailable(self._state.path, self._problem.reason)
                stored = [
                    self._stored(event, event.to_json()) for event in map(lifecycle.removed, gone)
                ]
                try:
                    self._state.commit(upsert=new.values(), events=stored)
                except StateUnavailable as exc:
                    self._unavailable(exc)
                    raise
                self._downloads.update(new)
                self._unconfirmed.update((event.seq, event) for event in stored)
                self._queue.put_lifecycle(stored)
            return len(new)

    def adopt(self, downloads: list[Download]) -> None:
        """Take ``downloads`` as tracked, as they are (stage and flags included), in one
        state-file transaction: the tracked set rebuilt after the state file was lost.

        :raises StateUnavailable: nothing changed.
        """
        with self._lock:
            self._state.commit(upsert=downloads)
            self._downloads.update((d.hash, d) for d in downloads)

    # -- for remove / pause / resume ---------------------------------------------------------

    def find(self, keys: Iterable[str]) -> Download | None:
        """The tracked download known by any of ``keys`` (its hash, or another of its ids)."""
        keys = tuple(keys)
        with self._lock:
            for key in keys:
                if (held := self._downloads.get(key)) is not None:
                    return held
            wanted = set(keys)
            others = self._downloads.values()
            return next((d for d in others if not wanted.isdisjoint(d.keys)), None)

    def was_tracked(self, keys: Iterable[str]) -> bool:
        """Whether a download known by any of ``keys`` was tracked, and no longer is."""
        with self._lock:
            return self._state.was_tracked(keys)

    def intend(self, download: Download, pending: str | None) -> Download:
        """Note, in the state file at once, the change a command is about to ask of
        qBittorrent (None: the call failed, nothing is pending). Until ``commanded`` the
        download is the command's: the poller leaves it alone, so the change is reported once,
        by the command. After a crash in between, the poll that sees the change done reports
        it as the command's, from ``pending``. Returns the download as now held."""
        with self._lock:
            held = self._downloads.get(download.hash)
            if held is None:
                return download
            held = attrs.evolve(held, pending=pending)
            self._write(lambda: self._state.commit(upsert=[held]))
            self._downloads[held.hash] = held
            if pending is None:
                self._busy.discard(held.hash)
            else:
                self._busy.add(held.hash)
            return held

    def commanded(
        self, *, updated: Iterable[Download] = (), ended: Iterable[Download] = ()
    ) -> None:
        """What remove/pause/resume commands did, once their events are confirmed: ``updated``
        replace the held downloads, ``ended`` are tracked no more. One transaction."""
        with self._lock:
            updated = [d for d in updated if d.hash in self._downloads]
            ended = [self._downloads[d.hash] for d in ended if d.hash in self._downloads]
            if updated or ended:
                self._write(lambda: self._state.commit(upsert=updated, delete=ended))
            for download in updated:
                self._downloads[download.hash] = download
            for download in ended:
                del self._downloads[download.hash]
            changed = {d.hash for d in (*updated, *ended)}
            self._busy -= changed
            self._touched |= changed

    def poll_snapshot(self) -> tuple[list[Download], frozenset[str]]:
        """``snapshot`` at the start of a poll cycle, with the downloads a command has in hand
        (the poller leaves them to it). What commands change from now on is not overwritten by
        this cycle's findings (``record``)."""
        with self._lock:
            self._touched.clear()
            return list(self._downloads.values()), frozenset(self._busy)

    def snapshot(self) -> list[Download]:
        """The tracked downloads, for the poller to compare outside the lock. Not copies (with
        10,000 tracked, copies cost megabytes a cycle): the poller never changes them, it
        makes changed ones with ``attrs.evolve`` and hands them to ``record``."""
        with self._lock:
            return list(self._downloads.values())

    def record(
        self,
        *,
        updated: Iterable[Download] = (),
        persist: Iterable[str] = (),
        removed: Iterable[Download] = (),
        events: Iterable[Event] = (),
        progress: Iterable[Envelope] = (),
    ) -> None:
        """Apply the poller's findings: ``updated`` replace what is in memory (those named in
        ``persist`` are also written), ``removed`` are forgotten, ``events`` are stored and
        queued, all in one state-file transaction; then ``progress`` is queued.

        The poller compares a snapshot outside the lock, and ``track`` may meanwhile have put a
        later torrent with the same hash in the place of one it looked at. What it found about
        a download that is no longer the one held (an update, a removal, the events and
        progress of that hash) is dropped: ``track`` has reported the old one removed already,
        and the new one is looked at in the next cycle.
        """
        updated = list(updated)
        persist = set(persist)
        removed = list(removed)
        bodies = [(event, event.to_json()) for event in events]  # outside the lock: CPU
        with self._lock:
            stale = {d.hash for d in (*updated, *removed) if not self._holds(d)} | self._touched
            gone = {d.hash for d in removed} - stale
            current = [d for d in updated if d.hash not in stale and d.hash not in gone]
            upsert = [d for d in current if d.hash in persist]
            stored = [
                self._stored(event, body) for event, body in bodies if event.hash not in stale
            ]
            if upsert or gone or stored:
                ended = [self._downloads[key] for key in gone]
                self._write(lambda: self._state.commit(upsert=upsert, delete=ended, events=stored))
            for download in current:
                self._downloads[download.hash] = download
            for key in gone:
                del self._downloads[key]
            self._unconfirmed.update((event.seq, event) for event in stored)
            # Queued under the lock, so the order of events matches the order of changes.
            self._queue.put_lifecycle(stored)
            self._queue.put_progress([event for event in progress if event.hash not in stale])

    def _holds(self, download: Download) -> bool:
        """Whether ``download``, as the poller saw it, is the torrent held in memory. One whose
        ``added_on`` was unknown may have learnt it from the poller; ``track`` never replaces
        such a one, so it is still the same."""
        held = self._downloads.get(download.hash)
        return held is not None and held.added_on in (None, download.added_on)

    def event_published(self, seq: int) -> None:
        """The broker confirmed event ``seq``. Never raises: the publisher must go on
        publishing whatever the disk does; a row that cannot be deleted now is left out of
        the next rewrite instead."""
        with self._lock:
            self._unconfirmed.pop(seq, None)
            self._write(lambda: self._state.event_published(seq))

    # -- the state file's health -----------------------------------------------------------

    @property
    def problem(self) -> StateProblem | None:
        """Why the state file cannot be written, or None while it can."""
        return self._problem

    def maintain(self) -> None:
        """Called every few seconds (by the service's main thread; no network I/O here).

        Notices a state file deleted or replaced under the running service, and writes the
        whole memory to the file after it could not be written. Never raises: a file that
        still cannot be written stays a ``problem`` and is tried again next time.
        """
        with self._lock:
            try:
                replaced = self._state.replaced()
                if replaced:
                    self._state.reopen()
                if replaced or self._problem is not None:
                    self._state.rewrite(
                        self._downloads.values(),
                        [self._unconfirmed[seq] for seq in sorted(self._unconfirmed)],
                    )
            except StateUnavailable as exc:
                self._unavailable(exc)
                return
            if replaced and self._problem is None:
                log.warning(
                    "the state file %s was deleted or replaced while running: written again "
                    "from memory (%d tracked downloads, %d events not yet confirmed)",
                    self._state.path,
                    len(self._downloads),
                    len(self._unconfirmed),
                )
            elif self._problem is not None:
                log.warning(
                    "the state file %s can be written again after %.0f s: wrote %d tracked "
                    "downloads and %d events not yet confirmed; taking commands again",
                    self._state.path,
                    time.monotonic() - self._problem.since,
                    len(self._downloads),
                    len(self._unconfirmed),
                )
                self._problem = None
                self.writable.set()

    def _stored(self, event: Event, body: bytes) -> Envelope:
        """Numbered here, not by SQLite: an event needs its number for the publish queue even
        when the file cannot be written, and keeps it when the file is written again."""
        self._last_seq += 1
        return Envelope(
            seq=self._last_seq,
            event_id=event.event_id,
            routing_key=event.routing_key,
            hash=event.hash,
            request_id=event.request_id,
            persistent=event.persistent,
            body=body,
        )

    def _write(self, write: Callable[[], None]) -> None:
        """Write through to the file, unless it is known to be unwritable: then the change is
        in memory only, and ``maintain`` writes everything once it can."""
        if self._problem is not None:
            return
        try:
            write()
        except StateUnavailable as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: StateUnavailable) -> None:
        """Start of an episode: logged once, however often the retries fail."""
        if self._problem is not None:
            return
        self._problem = StateProblem(path=str(exc.path), reason=exc.reason, since=time.monotonic())
        self.writable.clear()
        log.error(
            "cannot write the state file %s: %s; commands wait in their queue, events are "
            "published from memory, and everything is written once the file can be written",
            exc.path,
            exc.reason,
        )
