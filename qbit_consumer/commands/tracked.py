"""What the commands need of the tracked downloads (the registry, ``tracking.registry``): a
protocol here, so that the command room does not import the tracking room, and a batch's view
of it, in which a later command sees what an earlier command of the same batch added."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from qbit_consumer.model import Download


class Tracked(Protocol):
    def track(self, added: list[Download]) -> int:
        """Start tracking ``added``. :raises StateUnavailable:"""
        ...

    def find(self, keys: Iterable[str]) -> Download | None: ...

    def was_tracked(self, keys: Iterable[str]) -> bool: ...

    def intend(self, download: Download, pending: str | None) -> Download: ...

    def commanded(
        self, *, updated: Iterable[Download] = (), ended: Iterable[Download] = ()
    ) -> None: ...


class BatchView:
    """The tracked downloads as the commands of one batch see them: what an earlier command of
    the batch added is recorded only once the batch's events are confirmed, yet a remove that
    follows its add in the same batch must find it."""

    def __init__(self, tracked: Tracked) -> None:
        self._tracked = tracked
        self._added: dict[str, Download] = {}

    def added(self, downloads: Iterable[Download]) -> None:
        self._added.update((d.hash, d) for d in downloads)

    def find(self, keys: Iterable[str]) -> Download | None:
        wanted = set(keys)
        for download in self._added.values():
            if not wanted.isdisjoint(download.keys):
                return download
        return self._tracked.find(wanted)

    def was_tracked(self, keys: Iterable[str]) -> bool:
        return self._tracked.was_tracked(keys)

    def intend(self, download: Download, pending: str | None) -> Download:
        if download.hash in self._added:  # not in the state file yet: nothing to note there
            self._added[download.hash] = attrs.evolve(download, pending=pending)
            return self._added[download.hash]
        return self._tracked.intend(download, pending)
