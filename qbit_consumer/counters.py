"""What the service has done since it started, counted for its status message.

The consumer thread counts what became of each command once it is acked, and both publishing
threads count the events the broker confirmed; the main thread reads a snapshot once a status
interval. A lock, not per-thread counters: a few increments a second never contend.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable


class Counters:
    """Counts since the process started; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: collections.Counter[str] = collections.Counter()
        self._events: collections.Counter[str] = collections.Counter()

    def commands(self, outcomes: Iterable[str]) -> None:
        """Commands settled for good (acked): one outcome each."""
        with self._lock:
            self._commands.update(outcomes)

    def events(self, names: Iterable[str]) -> None:
        """Events the broker confirmed: one name each."""
        with self._lock:
            self._events.update(names)

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """(commands by outcome, events by name), as they stand now."""
        with self._lock:
            return dict(self._commands), dict(self._events)
