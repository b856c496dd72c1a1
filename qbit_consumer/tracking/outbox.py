"""The publish queue: events waiting for the publisher thread, in memory.

Lifecycle events (already safe in the state file's outbox) and progress events wait here for
the broker. The queue keeps the order of events per download and never drops a lifecycle
event; a progress event replaces the previous one of the same download while that one is still
waiting, so a slow or absent broker costs at most one progress event per download in memory.
Producers (the registry, under its lock) put; the publisher thread takes, and puts back at the
head what the broker did not take.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable

from qbit_consumer.contract.events import Envelope
from qbit_consumer.errors import BrokerUnavailable


class PublishQueue:
    """Thread-safe; any thread may put, the publisher thread takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[Envelope] = collections.deque()
        # The progress item of each download that is still waiting and has no lifecycle event
        # queued behind it: a newer progress event may replace it in place.
        self._open_progress: dict[str, Envelope] = {}
        # The status message waiting, if any: only the newest is worth sending.
        self._status: Envelope | None = None
        self._waker: Callable[[], None] | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        with self._lock:
            self._waker = waker

    def put_lifecycle(self, items: list[Envelope]) -> None:
        with self._lock:
            for item in items:
                if item.hash is not None:
                    self._open_progress.pop(item.hash, None)
                self._items.append(item)
        self.wake()

    def put_progress(self, items: list[Envelope]) -> None:
        with self._lock:
            for item in items:
                assert item.hash is not None
                waiting = self._open_progress.get(item.hash)
                if waiting is not None:
                    waiting.body, waiting.event_id = item.body, item.event_id
                else:
                    self._open_progress[item.hash] = item
                    self._items.append(item)
        self.wake()

    def put_status(self, item: Envelope) -> None:
        """The service's status: it replaces one still waiting (a broker away for an hour
        leaves one status in memory, not sixty, and the one that goes out is the newest)."""
        with self._lock:
            if self._status is not None:
                self._status.body, self._status.event_id = item.body, item.event_id
            else:
                self._status = item
                self._items.append(item)
        self.wake()

    def take(self, limit: int = 1) -> list[Envelope]:
        """Up to ``limit`` items from the head, oldest first."""
        with self._lock:
            taken: list[Envelope] = []
            while self._items and len(taken) < limit:
                item = self._items.popleft()
                if item.hash is not None and self._open_progress.get(item.hash) is item:
                    del self._open_progress[item.hash]
                elif item is self._status:
                    self._status = None
                taken.append(item)
            return taken

    def put_back(self, items: list[Envelope]) -> None:
        """Return items that could not be published to the head of the queue, in order."""
        with self._lock:
            self._items.extendleft(reversed(items))

    def wake(self) -> None:
        waker = self._waker
        if waker is not None:
            # Failing means the publisher is reconnecting; it looks at the queue when it is back.
            with contextlib.suppress(BrokerUnavailable):
                waker()
