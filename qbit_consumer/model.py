"""A torrent as qBittorrent's ``torrents/info`` describes it: the domain type the poller, the
lifecycle rules and the add path share, kept out of the adapter that fetches it (``qbit``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Torrent:
    """The fields of a ``torrents/info`` item that this service uses, typed."""

    id: str
    infohash_v1: str | None
    infohash_v2: str | None
    name: str
    state: str
    save_path: str
    content_path: str
    progress: float
    size: int
    amount_left: int
    completed: int
    completion_on: int
    dlspeed: int
    upspeed: int
    eta: int
    num_seeds: int
    num_leechs: int
    added_on: int

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Torrent:
        return cls(
            id=str(item.get("hash", "")).lower(),
            infohash_v1=(item.get("infohash_v1") or None),
            infohash_v2=(item.get("infohash_v2") or None),
            name=str(item.get("name", "")),
            state=str(item.get("state", "unknown")),
            save_path=str(item.get("save_path", "")),
            content_path=str(item.get("content_path", "")),
            progress=float(item.get("progress", 0.0)),
            size=int(item.get("size", 0)),
            amount_left=int(item.get("amount_left", 0)),
            completed=int(item.get("completed", 0)),
            completion_on=int(item.get("completion_on", 0) or 0),
            dlspeed=int(item.get("dlspeed", 0)),
            upspeed=int(item.get("upspeed", 0)),
            eta=int(item.get("eta", 0)),
            num_seeds=int(item.get("num_seeds", 0)),
            num_leechs=int(item.get("num_leechs", 0)),
            added_on=int(item.get("added_on", 0)),
        )

    def matches(self, keys: Iterable[str]) -> bool:
        """True when any of ``keys`` is this torrent's id, v1 or (40 or 64 hex) v2 hash."""
        mine = {self.id, self.infohash_v1, self.infohash_v2}
        if self.infohash_v2:
            mine.add(self.infohash_v2[:40])
        return any(key in mine for key in keys)


def index_torrents(torrents: Iterable[Torrent]) -> dict[str, Torrent]:
    """Each torrent under every key it can be known by (id, v1, v2, v2 cut to 40 hex): a hybrid
    torrent is listed under its v2 id, and re-keyed there when added from a v1-only magnet."""
    index: dict[str, Torrent] = {}
    for torrent in torrents:
        for key in (torrent.id, torrent.infohash_v1, torrent.infohash_v2):
            if key:
                index.setdefault(key, torrent)
        if torrent.infohash_v2:
            index.setdefault(torrent.infohash_v2[:40], torrent)
    return index
