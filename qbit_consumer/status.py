"""The bridge's own status message (CONTRACT section 11), put together on the main thread.

Every ``[service] status_interval_seconds`` the main thread gathers what the other threads
keep (counts, the poller's last cycle, qBittorrent's reachability, the registry's sizes) and
hands one ``downloads.status`` to the publish queue, where it replaces one still waiting. The
publisher sends it like any event, persistent and confirmed. Nothing is sent while RabbitMQ is
away, and that is the point: the platform (or ``qbit-consumer status``) tells a dead or cut-off
bridge by the age of the newest status, whether or not anything else happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qbit_consumer import __version__
from qbit_consumer.config import Config
from qbit_consumer.contract.events import EVENT_TYPES, rfc3339
from qbit_consumer.contract.status import (
    ACTIVE,
    COMMAND_OUTCOMES,
    LastPoll,
    QbittorrentStatus,
    Status,
    TrackedCounts,
)
from qbit_consumer.counters import Counters
from qbit_consumer.model import Reachability


class StatusReport:
    """Builds the status message from what the running service's parts keep, and says when
    the next one is due (on the monotonic clock: a wall-clock jump neither floods nor stops
    it)."""

    def __init__(
        self,
        cfg: Config,
        counters: Counters,
        *,
        counts: Callable[[], tuple[int, int, int]],
        qbit: Reachability,
        last_poll: Callable[[], tuple[float, float] | None],
    ) -> None:
        """``counts()``: (tracked, of them active, outbox depth); ``last_poll()``: when the
        last poll cycle began (wall clock) and how long it took."""
        self._cfg = cfg
        self._counters = counters
        self._counts = counts
        self._qbit = qbit
        self._last_poll = last_poll
        self._started_at = time.time()
        self._started = time.monotonic()
        self._next = self._started  # the first one at once: "it runs" is news

    def due(self, now: float) -> bool:
        """Whether a status is due at ``now`` (``time.monotonic()``); never when they are off."""
        interval = self._cfg.service.status_interval_seconds
        if interval == 0 or now < self._next:
            return False
        self._next += interval
        if self._next <= now:  # the main loop was held up: one now, not a burst of them
            self._next = now + interval
        return True

    def build(self) -> Status:
        total, active, outbox = self._counts()
        commands, events = self._counters.snapshot()
        last = self._last_poll()
        return Status(
            instance=self._cfg.service.name,
            version=__version__,
            started_at=rfc3339(self._started_at),
            uptime_seconds=int(time.monotonic() - self._started),
            role=ACTIVE,
            qbittorrent=QbittorrentStatus(
                reachable=self._qbit.up,
                since=None if self._qbit.since is None else rfc3339(self._qbit.since),
                version=self._qbit.version,
            ),
            tracked=TrackedCounts(total=total, active=active),
            commands={outcome: commands.get(outcome, 0) for outcome in COMMAND_OUTCOMES},
            events={name: events.get(name, 0) for name in EVENT_TYPES},
            outbox=outbox,
            last_poll=None
            if last is None
            else LastPoll(at=rfc3339(last[0]), seconds=round(last[1], 3)),
        )
