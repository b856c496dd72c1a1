"""Rebuilding the tracked set from the audit trail, after the state file was lost.

The state file is a cache of what the history stream and qBittorrent already know (CONTRACT
section 8): a download is tracked from its ``added`` until its ``removed``, and what the trail
says was reported (completed, paused, stalled, errored) is marked as reported, so the poller's
first look reports only what happened since, once, and repeats nothing the trail holds.
Pure: the stream is read by ``broker.stream``, qBittorrent listed by ``qbit``.
"""

from __future__ import annotations

from collections.abc import Iterable

from qbit_consumer.history.trail import Entry
from qbit_consumer.model import Download, Torrent


def rebuild(trail: Iterable[Entry]) -> list[Download]:
    """The downloads the trail says are tracked: added, and not removed since."""
    tracked: dict[str, Download] = {}
    for entry in trail:
        event = entry.event
        key = event.get("hash")
        if not isinstance(key, str) or not key:
            continue
        kind = entry.kind.removeprefix("downloads.")
        if kind == "added":
            v2 = event.get("infohash_v2") or None
            tracked.setdefault(
                key,
                Download.added(
                    hash=key,
                    qbit_id=v2[:40] if v2 else key,
                    infohash_v1=key if len(key) == 40 and key != (v2 or "")[:40] else None,
                    infohash_v2=v2,
                    request_id=event.get("request_id"),
                    category=event.get("category"),
                    name=event.get("name"),
                ),
            )
            continue
        download = tracked.get(key)
        if download is None:
            continue
        if kind == "removed":
            del tracked[key]
        elif kind == "completed":
            download.stage = "completed"
            download.stalled = False
        elif kind == "paused":
            download.paused = True
        elif kind == "resumed":
            download.paused = False
        elif kind == "stalled":
            download.stalled = True
        elif kind == "errored":
            download.errored = True
    return list(tracked.values())


def unknown_to_history(managed: Iterable[Torrent], known: Iterable[Download]) -> list[Download]:
    """Torrents with the managed tag that the trail does not know (added by a version without
    history, or before the trail's retention): tracked from now on, without a request id."""
    seen = {key for download in known for key in download.keys}
    found: list[Download] = []
    for torrent in managed:
        if any(key in seen for key in torrent.keys):
            continue
        found.append(
            Download.added(
                hash=torrent.hash,
                qbit_id=torrent.id,
                infohash_v1=torrent.infohash_v1,
                infohash_v2=torrent.infohash_v2,
                name=torrent.name,
                added_on=torrent.added_on,
            )
        )
        seen.update(torrent.keys)
    return found
