"""The rules that turn what qBittorrent reports into lifecycle events. Pure, no I/O.

``observe`` compares one tracked download with qBittorrent's current view of its torrent and
returns the updated download, the lifecycle events it caused, and a progress event when it is
still incomplete. ``replaced`` tells a torrent apart from a later one with the same hash, and
``Vanishing`` holds removals back while qBittorrent lists none of the tracked downloads. Every
rule is written out in docs/lifecycle.md.

Times given to these rules are ``time.monotonic()``: they only ever measure durations, and a
wall clock set forward by NTP must not make every download look stalled.
"""

from __future__ import annotations

import enum
import sys
from typing import Final

import attrs

from qbit_consumer.contract.events import (
    BY_COMMAND,
    BY_EXTERNAL,
    Completed,
    Errored,
    Event,
    Paused,
    Progress,
    Removed,
    Resumed,
    Stalled,
    rfc3339,
)
from qbit_consumer.model import (
    PAUSED,
    PENDING_PAUSE,
    PENDING_REMOVE,
    PENDING_REMOVE_FILES,
    PENDING_RESUME,
    Download,
    Torrent,
)

#: States in which qBittorrent's numbers describe a check or a move, not the download.
CHECKING: Final = frozenset({"checkingDL", "checkingUP", "checkingResumeData", "moving"})
ERRORED: Final = frozenset({"error", "missingFiles"})
#: States in which a download is trying to make progress; only here can it stall. Paused,
#: queued and checking downloads are waiting on purpose.
TRYING: Final = frozenset({"metaDL", "forcedMetaDL", "stalledDL", "downloading", "forcedDL"})
#: qBittorrent's "infinite" ETA.
MAX_ETA: Final = 8_640_000
#: uint32(-1), the "never" of qBittorrent 4.1's completion_on.
_UINT32_MAX: Final = 4_294_967_295
#: The mass-disappearance rule needs at least this many tracked downloads: a person deleting
#: the two or three that are tracked is ordinary, but five or more gone in the same cycle is
#: far likelier a qBittorrent started on the wrong (empty) profile.
VANISHED_MIN_DOWNLOADS: Final = 5
#: Cycles to wait, after the first that lists none of them, before reporting them removed (50 s
#: at the default 5 s interval): room for a supervisor or a person to start qBittorrent again
#: on its own profile, at the cost of reporting a real "delete everything" that much later.
VANISHED_WAIT_CYCLES: Final = 10


@attrs.frozen
class Observation:
    download: Download
    events: list[Event]
    progress: Progress | None


def completion_time(torrent: Torrent) -> int | None:
    """``completion_on`` when it is a real time, else None.

    "Never" is -1 in 5.x, uint32(-1) in 4.1, and in 4.2-4.6 minus the host's 1970 UTC offset,
    which is a small positive number west of UTC (at most +43200): anything within the first
    day of 1970 is not a real completion time.
    """
    value = torrent.completion_on
    return value if 86_400 < value != _UINT32_MAX else None


def is_complete(torrent: Torrent) -> bool:
    """qBittorrent holds all the wanted data, checked and in place.

    A magnet still waiting for its metadata also reports ``amount_left`` 0 (it knows of no
    data yet), hence the completion time; during a recheck or a move the numbers are about the
    check or the move, hence the states.
    """
    return (
        torrent.amount_left <= 0
        and completion_time(torrent) is not None
        and torrent.state not in CHECKING
        and torrent.state not in ("metaDL", "forcedMetaDL")
    )


def replaced(known: int | None, seen: int | None) -> bool:
    """Whether a torrent with ``added_on`` ``seen`` is a later one than the tracked torrent,
    added ``known``: the same hash removed and added again.

    Only when both are known (not None, not 0): a download from an older state file learns its
    ``added_on`` at its first poll instead. ``added_on`` counts whole seconds, so a torrent
    removed and added again within the same second cannot be told apart.
    """
    return bool(known and seen and known != seen)


def observe(download: Download, torrent: Torrent, now: float, stalled_after: float) -> Observation:
    """``now`` is ``time.monotonic()``, like ``progress_changed_at``. The caller has checked
    that ``torrent`` is the download's own, not a later one (``replaced``)."""
    moved = torrent.completed != download.last_completed
    new = attrs.evolve(
        download,
        added_on=download.added_on or torrent.added_on or None,
        qbit_id=download.qbit_id if torrent.id == download.qbit_id else torrent.id,
        infohash_v1=download.infohash_v1 or torrent.infohash_v1,
        infohash_v2=download.infohash_v2 or torrent.infohash_v2,
        name=download.name if torrent.name in ("", download.name) else torrent.name,
        last_state=sys.intern(torrent.state),
        last_progress=torrent.progress,
        last_completed=torrent.completed,
    )
    if moved or torrent.state not in TRYING:
        # Time paused, queued or checking does not count towards a stall.
        new.progress_changed_at = now
        new.stalled = False
    events: list[Event] = []

    if torrent.state in ERRORED:
        if not download.errored:
            events.append(_errored(new, torrent))
        new.errored = True
    else:
        new.errored = False

    # A completed download stays tracked: stopping its seeding is a pause too, reported after
    # the completion when both are seen in the same cycle; starting it again a resume.
    new.paused = torrent.state in PAUSED
    if new.paused and not download.paused:
        switched = [_paused(new, torrent, _by(download.pending == PENDING_PAUSE))]
    elif download.paused and not new.paused:
        switched = [_resumed(new, torrent, _by(download.pending == PENDING_RESUME))]
    else:
        switched = []
    if (download.pending, new.paused) in ((PENDING_PAUSE, True), (PENDING_RESUME, False)):
        new.pending = None  # the command's change is done
    if download.stage != "active":
        return Observation(new, events + switched, None)

    if is_complete(torrent):
        new.stage = "completed"
        new.stalled = False
        events += [_completed(new, torrent), *switched]
        return Observation(new, events, None)
    events += switched

    stalled_for = now - new.progress_changed_at
    if torrent.state in TRYING and not new.stalled and stalled_for >= stalled_after:
        new.stalled = True
        events.append(
            Stalled(
                **_identity(new),
                state=torrent.state,
                progress=torrent.progress,
                stalled_seconds=round(stalled_for, 1),
            )
        )
    return Observation(new, events, _progress(new, torrent))


class Vanish(enum.Enum):
    """What one cycle's full listing means for the tracked downloads it does not hold."""

    NO = "no"  # some are listed: report removals as usual
    NOTICED = "noticed"  # the first cycle listing none: hold removals back, and say so
    WAITING = "waiting"  # still none: hold
    RETURNED = "returned"  # listed again during the wait: nothing was reported
    CONFIRMED = "confirmed"  # none for the whole wait: report them, once each, as usual

    @property
    def holds(self) -> bool:
        return self in (Vanish.NOTICED, Vanish.WAITING)


@attrs.define
class Vanishing:
    """The mass-disappearance rule: when a full listing holds none of the tracked downloads
    (at least ``VANISHED_MIN_DOWNLOADS``), their removal waits ``VANISHED_WAIT_CYCLES`` more
    cycles. qBittorrent restarted on an empty profile (a volume not mounted) lists nothing;
    reporting everything removed would make the service forget every download, and nothing
    would be tracked when the right profile came back.
    """

    #: Cycles in a row whose listing held none of them, since the last failed poll: a removal
    #: must be seen by polls that work, and qBittorrent restarted meanwhile may list them.
    cycles: int = 0
    #: The hashes that vanished together, from the first such cycle until they are listed
    #: again or the wait is over; kept across a failed poll, so that the right profile coming
    #: back after a restart is noticed too. Only they count meanwhile: the consumer goes on
    #: adding downloads to the qBittorrent that answers, and those being listed says nothing
    #: about the ones that vanished.
    vanished: frozenset[str] = frozenset()

    def listing(self, tracked: set[str], listed: set[str]) -> Vanish:
        """One cycle: the hashes of the tracked downloads, and those of them qBittorrent lists
        (a full listing, or the cheap query when it missed none)."""
        if self.vanished:
            tracked, listed = tracked & self.vanished, listed & self.vanished
        if len(tracked) < VANISHED_MIN_DOWNLOADS or listed:
            returned = bool(self.vanished and listed)
            self.cycles, self.vanished = 0, frozenset()
            return Vanish.RETURNED if returned else Vanish.NO
        self.cycles += 1
        if self.cycles == 1:
            self.vanished = frozenset(tracked)
            return Vanish.NOTICED
        if self.cycles <= VANISHED_WAIT_CYCLES:
            return Vanish.WAITING
        if self.cycles == VANISHED_WAIT_CYCLES + 1:
            self.vanished = frozenset()
            return Vanish.CONFIRMED
        return Vanish.NO  # reported already; those not yet confirmed removed follow as usual

    @property
    def waiting(self) -> bool:
        """Whether downloads vanished and the rule is counting: only then can a cycle in which
        qBittorrent listed every download it was asked about change anything."""
        return bool(self.cycles or self.vanished)

    def failed(self) -> None:
        """A poll failed: counting starts again at the next one that works."""
        self.cycles = 0


def removed(download: Download) -> Removed:
    """Gone from qBittorrent: by the remove command that was pending (the service stopped
    before it reported it), or by someone else, who may or may not have deleted the files."""
    by_command = download.pending in (PENDING_REMOVE, PENDING_REMOVE_FILES)
    return Removed(
        **_identity(download),
        reason=_by(by_command),
        files_deleted=(download.pending == PENDING_REMOVE_FILES) if by_command else None,
        last_state=download.last_state,
        last_progress=download.last_progress,
        completed=download.stage == "completed",
    )


def _paused(download: Download, torrent: Torrent, by: str) -> Paused:
    return Paused(**_identity(download), state=torrent.state, progress=torrent.progress, by=by)


def _resumed(download: Download, torrent: Torrent, by: str) -> Resumed:
    return Resumed(**_identity(download), state=torrent.state, progress=torrent.progress, by=by)


def _by(command: bool) -> str:
    return BY_COMMAND if command else BY_EXTERNAL


def _identity(download: Download) -> dict[str, str | None]:
    return {
        "request_id": download.request_id,
        "hash": download.hash,
        "infohash_v2": download.infohash_v2,
        "name": download.name,
        "category": download.category,
    }


def _progress(download: Download, torrent: Torrent) -> Progress:
    return Progress(
        **_identity(download),
        state=torrent.state,
        progress=round(torrent.progress, 6),
        downloaded=torrent.completed,
        size=torrent.size,
        dlspeed=torrent.dlspeed,
        upspeed=torrent.upspeed,
        eta=None if torrent.eta >= MAX_ETA or torrent.eta < 0 else torrent.eta,
        num_seeds=torrent.num_seeds,
        num_peers=torrent.num_leechs,
    )


def _completed(download: Download, torrent: Torrent) -> Completed:
    when = completion_time(torrent) or 0
    return Completed(
        **_identity(download),
        size=torrent.size,
        save_path=torrent.save_path,
        content_path=torrent.content_path,
        completed_at=rfc3339(when),
    )


def _errored(download: Download, torrent: Torrent) -> Errored:
    detail = (
        "the downloaded files are missing from disk"
        if torrent.state == "missingFiles"
        else "qBittorrent reports an error for this torrent (disk full, permissions?)"
    )
    return Errored(**_identity(download), state=torrent.state, detail=detail)
