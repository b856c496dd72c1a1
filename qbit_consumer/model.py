"""The domain: a torrent as qBittorrent lists it, a download as this service tracks it, and the
one rule for which ids a torrent is known by. Pure data, no I/O: the lifecycle rules, the add
path and the adapters all speak these types, and none of them owns them."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import attrs

#: A v2 info-hash (64 hex) is also known by its first 40 hex: qBittorrent's torrent id for a
#: v2 or hybrid torrent (libtorrent's ``info_hash_t::get_best()``), and our ``hash`` for a
#: v2-only one.
_V2_ID_CHARS: Final = 40


def keys_of(*hashes: str | None) -> tuple[str, ...]:
    """Every id a torrent with these hashes may be listed under, in the order given: each
    hash, and a v2 one also cut to 40 hex. qBittorrent lists a hybrid torrent under its v2 id,
    and re-keys one added from a v1-only magnet there once its metadata arrives."""
    keys: list[str] = []
    for value in hashes:
        if value and value not in keys:
            keys.append(value)
            if len(value) > _V2_ID_CHARS and value[:_V2_ID_CHARS] not in keys:
                keys.append(value[:_V2_ID_CHARS])
    return tuple(keys)


def download_hash(infohash_v1: str | None, infohash_v2: str | None) -> str | None:
    """A download's stable ``hash`` in events: its v1 info-hash when it has one, else its v2
    cut to 40 hex (qBittorrent's own id for a v2 torrent); None when it has neither."""
    if infohash_v1:
        return infohash_v1
    return infohash_v2[:40] if infohash_v2 else None


#: qBittorrent's words for a stopped torrent: 4.x says paused, 5.x stopped; DL while
#: incomplete, UP once complete (seeding stopped).
PAUSED: Final = frozenset({"pausedDL", "stoppedDL", "pausedUP", "stoppedUP"})


def find(index: Mapping[str, Torrent], keys: Iterable[str]) -> Torrent | None:
    """The torrent listed under the first of ``keys`` that ``index`` holds."""
    for key in keys:
        torrent = index.get(key)
        if torrent is not None:
            return torrent
    return None


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
    tags: tuple[str, ...] = ()

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
            tags=tuple(t.strip() for t in str(item.get("tags", "")).split(",") if t.strip()),
        )

    @property
    def keys(self) -> tuple[str, ...]:
        return keys_of(self.id, self.infohash_v1, self.infohash_v2)

    @property
    def hash(self) -> str:
        """The ``hash`` events carry for this torrent's download (``download_hash``), or its
        id when qBittorrent lists neither info-hash."""
        return download_hash(self.infohash_v1, self.infohash_v2) or self.id


def index_torrents(
    torrents: Iterable[Torrent], wanted: Collection[str] | None = None
) -> dict[str, Torrent]:
    """Each torrent under every key it can be known by (``keys_of``); with ``wanted``, only
    those known by one of these keys (a long listing searched for a few torrents: a hybrid
    torrent is listed under its v2 id, which no ``hashes=`` filter can name from its v1)."""
    index: dict[str, Torrent] = {}
    for torrent in torrents:
        if wanted is not None and wanted.isdisjoint(torrent.keys):
            continue
        for key in torrent.keys:
            index.setdefault(key, torrent)
    return index


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
    #: ``time.monotonic()`` of the last progress: the stall timer.
    progress_changed_at: float
    stalled: bool = False
    paused: bool = False
    errored: bool = False
    #: qBittorrent's ``added_on`` of the torrent tracked: tells this download apart from a
    #: later one with the same hash (removed and added again). None until first seen.
    added_on: int | None = None
    #: A command's change asked of qBittorrent and not yet seen done (``PENDING_*``): written
    #: before the call, so that the poll that sees it done after a crash says it was the
    #: command, not someone else.
    pending: str | None = None

    @classmethod
    def added(
        cls,
        *,
        hash: str,
        qbit_id: str,
        infohash_v1: str | None = None,
        infohash_v2: str | None = None,
        request_id: str | None = None,
        category: str | None = None,
        name: str | None = None,
        added_on: int | None = None,
    ) -> Download:
        """A download a command just added, not looked at by the poller yet."""
        return compact(
            cls(
                hash=hash,
                qbit_id=qbit_id,
                infohash_v1=infohash_v1,
                infohash_v2=infohash_v2,
                request_id=request_id,
                category=category,
                name=name,
                stage="active",
                last_state=None,
                last_progress=None,
                last_completed=None,
                progress_changed_at=time.monotonic(),
                added_on=added_on or None,
            )
        )

    @property
    def keys(self) -> tuple[str, ...]:
        """Its ids, the one qBittorrent last listed it under first."""
        return keys_of(self.qbit_id, self.hash, self.infohash_v1, self.infohash_v2)


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


PENDING_PAUSE: Final = "pause"
PENDING_RESUME: Final = "resume"
PENDING_REMOVE: Final = "remove"
PENDING_REMOVE_FILES: Final = "remove+files"


class Reachability:
    """Whether qBittorrent answers, as the poller last found; the consumer takes commands only
    while it does. Safe from any thread. ``since`` (wall-clock seconds) is when that last
    changed, ``version`` what qBittorrent called itself the last time it was asked: both only
    for the status message."""

    def __init__(self) -> None:
        self.known = threading.Event()  # set after the first poll, good or bad
        self._up = threading.Event()
        self.since: float | None = None
        self.version: str | None = None

    def set(self, up: bool) -> None:
        if not self.known.is_set() or up != self._up.is_set():
            self.since = time.time()
        (self._up.set if up else self._up.clear)()
        self.known.set()

    @property
    def up(self) -> bool:
        return self._up.is_set()
