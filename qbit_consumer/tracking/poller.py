"""The polling thread: every ``interval_seconds`` it looks at the tracked downloads.

What it asks qBittorrent, and why it is cheap: qBittorrent's CPU per call grows with the size
of the answer and, for the full endpoints (``torrents/info`` without a filter, and
``sync/maindata`` whatever the rid), with the size of the whole library: about 0.75 s of
qBittorrent CPU per call at 5,000 torrents. A ``hashes=`` filter costs a few ms. So each cycle
asks, in one ``torrents/info?hashes=`` call, for

* every tracked download that is not complete yet, and
* a 1/``COMPLETED_SWEEP_CYCLES`` slice of the completed ones (rounded up), round robin: they
  only need checks for removal and errors, so each is looked at once every that many cycles
  (more often while fewer of them are tracked).

Only when a tracked torrent is missing from that answer does it list everything, once, to tell
a removal from a hybrid torrent that qBittorrent re-keyed under its v2 id after the metadata
came. A removal is reported only after the torrent was missing from full listings
``REMOVAL_CONFIRM_SECONDS`` apart, with no failed poll in between, and, when the listing holds
none of the tracked downloads at all, only after the wait of the mass-disappearance rule
(``lifecycle.Vanishing``). A torrent listed under a tracked hash but added at another time
(``added_on``) is a later one: the tracked one is reported removed.

Durations (the removal confirmation, an outage's length, the stall timer) are measured on
``time.monotonic()``; the wall clock only dates what the events say (``since``).

It owns no broker connection: its events go to the registry, which stores the lifecycle ones
in the outbox and queues them all, progress too, under its lock: what the poller found about a
download that the consumer replaced meanwhile is dropped there, progress included.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final

import attrs

from qbit_consumer.config import Config
from qbit_consumer.contract.events import Envelope, Event, PollingFailed, PollingRecovered, rfc3339
from qbit_consumer.errors import QbitConsumerError, TransientError
from qbit_consumer.model import Download, Reachability, Torrent, find, index_torrents
from qbit_consumer.qbit import LoginGate, QbitClient
from qbit_consumer.threads import POLLER, ServiceThread
from qbit_consumer.tracking.lifecycle import (
    VANISHED_WAIT_CYCLES,
    Vanish,
    Vanishing,
    observe,
    removed,
    replaced,
)
from qbit_consumer.tracking.registry import Registry

log = logging.getLogger(__name__)


@attrs.define
class _Look:
    """What one poll found."""

    updated: list[Download] = attrs.Factory(list)
    events: list[Event] = attrs.Factory(list)
    progress: list[Envelope] = attrs.Factory(list)  # serialised at once: bytes are smaller
    gone: list[Download] = attrs.Factory(list)
    changed: set[str] = attrs.Factory(set)  # identity changed: write it at once


#: Each completed download is checked for removal once every this many cycles.
COMPLETED_SWEEP_CYCLES: Final = 12
#: A torrent must be missing this long (and from two full listings) to count as removed.
REMOVAL_CONFIRM_SECONDS: Final = 3.0
#: Tracked hashes per ``torrents/info`` call: the answer (~1.5 KB of JSON per torrent, held
#: three times over while it is decoded) sets the service's memory high-water mark.
QUERY_CHUNK: Final = 200
#: Progress fields (state, percentage) of downloads without events are written at most this often.
PERSIST_PROGRESS_SECONDS: Final = 60.0


class PollerThread(ServiceThread):
    def __init__(self, cfg: Config, registry: Registry, gate: LoginGate) -> None:
        super().__init__(POLLER)
        self._cfg = cfg
        self._registry = registry
        self._gate = gate
        self._sweep_offset = 0
        self._missing_since: dict[str, float] = {}
        self._vanishing = Vanishing()
        self._failures = 0
        self._outage_since: float | None = None  # time.monotonic(): the outage's length
        self._outage_began_at = 0.0  # time.time(): the `since` of polling_failed
        self._alerted = False
        self._last_persist = -math.inf  # the first cycle writes everything
        #: Whether polls work; the consumer takes commands only while they do.
        self.qbit = Reachability()
        self._version_due = True  # qBittorrent's version is asked after each outage
        #: When the last cycle began (wall clock) and how long it took: the status message's.
        self.last_poll: tuple[float, float] | None = None
        self._client: QbitClient | None = None

    def work(self) -> None:
        self._client = qbit = QbitClient(self._cfg.qbittorrent, self._gate)
        interval = self._cfg.polling.interval_seconds
        next_at = time.monotonic()
        while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
            next_at += interval
            if next_at < time.monotonic():  # a slow cycle: skip, do not bunch up
                next_at = time.monotonic() + interval
            self.poll_once(qbit)
            self.beat()

    def finish(self) -> None:
        if self._client is not None:
            self._client.close()

    def poll_once(self, qbit: QbitClient) -> None:
        now, began = time.monotonic(), time.time()
        persist_all = now - self._last_persist >= PERSIST_PROGRESS_SECONDS
        try:
            self._poll(qbit, now, persist_all)
        except TransientError as exc:
            self._missing_since.clear()  # a removal must be seen by polls that work
            self._vanishing.failed()
            self._on_failure(exc, now)
            return
        finally:
            self.last_poll = (began, time.monotonic() - now)
        if persist_all:
            self._last_persist = now
        if self._version_due:
            self._learn_version(qbit)

    def _learn_version(self, qbit: QbitClient) -> None:
        """One cheap call after qBittorrent answers again (it may have been upgraded
        meanwhile); a failure leaves it due, and the next poll notices the outage."""
        try:
            self.qbit.version, _ = qbit.version()
        except QbitConsumerError:
            return
        self._version_due = False

    # -- one look at qBittorrent -------------------------------------------------------------

    def _poll(self, qbit: QbitClient, now: float, persist_all: bool) -> None:
        """Look at the tracked downloads chunk by chunk, applying each chunk's findings at once.

        Applying per chunk, not per cycle, is for memory and freshness: the publisher sends a
        chunk's progress events while the next chunk is fetched, so the queue holds about one
        chunk of them instead of every tracked download's (10,000 bodies are ~6 MB).
        """
        downloads, busy = self._registry.poll_snapshot()
        active = [d for d in downloads if d.stage == "active"]
        checked = active + self._sweep_slice([d for d in downloads if d.stage != "active"])
        if busy:  # a command is pausing, resuming or removing them: it reports what it did
            checked = [d for d in checked if d.hash not in busy]
        del downloads, active  # 10,000 references a cycle: only ``checked`` is needed now
        if not checked:
            qbit.ping()  # nothing to track, but an outage must still be noticed
            self._apply(_Look(events=self._on_success(now)), persist_all)
            return

        # In chunks: qBittorrent's answer for 10,000 hashes is ~15 MB of JSON.
        stalled_after = self._cfg.polling.stalled_after_seconds
        missing: list[Download] = []
        for start in range(0, len(checked), QUERY_CHUNK):
            chunk = checked[start : start + QUERY_CHUNK]
            index = index_torrents(qbit.torrents({key for d in chunk for key in d.keys}))
            look = _Look(events=self._on_success(now))  # qBittorrent answers: recovered
            for download in chunk:
                torrent = find(index, download.keys)
                if torrent is None:
                    missing.append(download)
                else:
                    self._observe(look, download, torrent, now, stalled_after)
            del index
            self._apply(look, persist_all)
        if not missing:
            if self._vanishing.waiting:  # otherwise a full answer changes nothing: no sets built
                tracked = {d.hash for d in self._registry.snapshot()}
                self._vanished(self._vanishing.listing(tracked, {d.hash for d in checked}))
            return
        # Removed, or re-keyed (a hybrid torrent listed under its v2 id once its metadata
        # arrived): only a full listing can tell.
        look = _Look()
        downloads = self._registry.snapshot()
        tracked = {d.hash for d in downloads}
        index = index_torrents(qbit.all_torrents())
        listed = {d.hash for d in downloads if find(index, d.keys) is not None}
        hold = self._vanished(self._vanishing.listing(tracked, listed))
        for download in missing:
            torrent = find(index, download.keys)
            if torrent is not None:
                self._observe(look, download, torrent, now, stalled_after)
            elif self._confirm_removed(download, now) and not hold:
                look.events.append(removed(download))
                look.gone.append(download)
        self._apply(look, persist_all)

    def _apply(self, look: _Look, persist_all: bool) -> None:
        """Record what a look found: one state-file transaction, then its progress queued."""
        if persist_all:
            persist = {d.hash for d in look.updated}
        else:
            persist = look.changed | {e.hash for e in look.events if e.hash}
        self._registry.record(
            updated=look.updated,
            persist=persist,
            removed=look.gone,
            events=look.events,
            progress=look.progress,
        )

    def _observe(
        self, look: _Look, download: Download, torrent: Torrent, now: float, stalled_after: float
    ) -> None:
        self._missing_since.pop(download.hash, None)
        if replaced(download.added_on, torrent.added_on):
            # Removed and added again (by hand, or by a command the consumer has not tracked
            # yet) since the last look: the tracked torrent is gone, this one is not ours.
            log.info(
                "a tracked torrent was removed and added again in qBittorrent: the tracked "
                "one is reported removed",
                extra={"hash": download.hash, "request_id": download.request_id},
            )
            look.events.append(removed(download))
            look.gone.append(download)
            return
        seen = observe(download, torrent, now, stalled_after)
        look.updated.append(seen.download)
        look.events.extend(seen.events)
        if seen.progress is not None:
            look.progress.append(seen.progress.envelope())
        if _identity(seen.download) != _identity(download):
            if seen.download.qbit_id != download.qbit_id:
                log.info(
                    "qBittorrent re-keyed a torrent: %s -> %s",
                    download.qbit_id,
                    seen.download.qbit_id,
                    extra={"hash": download.hash},
                )
            look.changed.add(download.hash)

    def _vanished(self, verdict: Vanish) -> bool:
        """Say what the mass-disappearance rule decided; whether removals wait this cycle."""
        vanished = len(self._vanishing.vanished)
        if verdict is Vanish.NOTICED:
            log.error(
                "qBittorrent lists none of the %d tracked downloads: started on an empty or "
                "the wrong profile? waiting %d cycles (%.0f s) before reporting them removed",
                vanished,
                VANISHED_WAIT_CYCLES,
                VANISHED_WAIT_CYCLES * self._cfg.polling.interval_seconds,
            )
        elif verdict is Vanish.RETURNED:
            log.warning("qBittorrent lists the tracked downloads again; none was reported removed")
        elif verdict is Vanish.CONFIRMED:
            log.error(
                "qBittorrent still lists none of the tracked downloads it lost after %d "
                "cycles: reporting them removed",
                VANISHED_WAIT_CYCLES,
            )
        return verdict.holds

    def _confirm_removed(self, download: Download, now: float) -> bool:
        first = self._missing_since.setdefault(download.hash, now)
        return now - first >= REMOVAL_CONFIRM_SECONDS

    def _sweep_slice(self, completed: list[Download]) -> list[Download]:
        if not completed:
            return []
        size = math.ceil(len(completed) / COMPLETED_SWEEP_CYCLES)
        completed.sort(key=lambda d: d.hash)
        start = self._sweep_offset % len(completed)
        self._sweep_offset = start + size
        chosen = completed[start : start + size]
        return chosen + completed[: max(0, start + size - len(completed))]

    # -- outages -----------------------------------------------------------------------------

    def _on_failure(self, exc: TransientError, now: float) -> None:
        self.qbit.set(up=False)
        self._version_due = True
        self._failures += 1
        if self._outage_since is None:
            self._outage_since = now
            self._outage_began_at = time.time()
            log.error("polling qBittorrent failed: %s", exc)
        threshold = self._cfg.polling.failure_alert_threshold
        if self._failures >= threshold and not self._alerted:
            self._alerted = True
            self._registry.record(
                events=[
                    PollingFailed(
                        request_id=None,
                        hash=None,
                        infohash_v2=None,
                        name=None,
                        category=None,
                        consecutive_failures=self._failures,
                        error=str(exc),
                        since=rfc3339(self._outage_began_at),
                    )
                ]
            )

    def _on_success(self, now: float) -> list[Event]:
        self.qbit.set(up=True)
        events: list[Event] = []
        if self._outage_since is not None:
            outage = now - self._outage_since
            log.warning("polling qBittorrent works again after %.1f s", outage)
            if self._alerted:
                events.append(
                    PollingRecovered(
                        request_id=None,
                        hash=None,
                        infohash_v2=None,
                        name=None,
                        category=None,
                        outage_seconds=round(outage, 1),
                    )
                )
        self._failures, self._outage_since, self._alerted = 0, None, False
        return events


def _identity(download: Download) -> tuple[str, str | None, str | None, int | None]:
    """What is written at once when it changes: a restart finds the torrent by its id and tells
    its incarnation by ``added_on``."""
    return (download.qbit_id, download.name, download.infohash_v2, download.added_on)
