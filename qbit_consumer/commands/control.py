"""``downloads.remove``, ``downloads.pause`` and ``downloads.resume`` (CONTRACT section 4b).

A command names a torrent by any of its info-hashes; only torrents this service added (the
``qbit-consumer`` tag) may be controlled, unless ``[commands] control_unmanaged``. Each is
idempotent: a command whose effect already holds (a repeat, a redelivery after a crash between
qBittorrent's call and the ack) is acked without a second event, and the event of a change
that happened before the command could report it is sent once, by whoever sees it first.

For a tracked download the change is noted in the state file before qBittorrent is asked
(``Tracked.intend``); the poller leaves the download to the command meanwhile, and after a
crash reports the change as the command's. Runs on the consumer's qBittorrent thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from qbit_consumer.commands.outcomes import Done, Outcome
from qbit_consumer.commands.tracked import BatchView
from qbit_consumer.config import Config
from qbit_consumer.contract.events import BY_COMMAND, BY_EXTERNAL, Event, Paused, Removed, Resumed
from qbit_consumer.contract.magnet import info_hash_keys
from qbit_consumer.contract.messages import MANAGED_TAG, CommandContext, structure_fields
from qbit_consumer.contract.status import PAUSED as PAUSED_OUTCOME
from qbit_consumer.contract.status import REMOVED, RESUMED, UNCHANGED
from qbit_consumer.errors import (
    INVALID_MESSAGE,
    NOT_FOUND,
    NOT_MANAGED,
    InvalidCommand,
    QbitConsumerError,
)
from qbit_consumer.model import (
    PAUSED,
    PENDING_PAUSE,
    PENDING_REMOVE,
    PENDING_REMOVE_FILES,
    PENDING_RESUME,
    Download,
    Torrent,
    find,
    index_torrents,
)
from qbit_consumer.qbit import QbitClient

REMOVE: Final = "downloads.remove"
PAUSE: Final = "downloads.pause"
RESUME: Final = "downloads.resume"
#: What each command counts as in the status message when it changed something.
_OUTCOMES: Final = {REMOVE: REMOVED, PAUSE: PAUSED_OUTCOME, RESUME: RESUMED}
#: After a pause or a resume, how long to wait for qBittorrent to list the new state.
SETTLE_SECONDS: Final = 2.0


@attrs.frozen(kw_only=True)
class ControlCommand:
    routing_key: str
    given: str  # the hash as the command gave it, lowercase
    keys: tuple[str, ...]
    delete_files: bool
    request_id: str | None


@attrs.frozen(kw_only=True)
class _Body:
    hash: str
    request_id: str | None = None


@attrs.frozen(kw_only=True)
class _RemoveBody:
    hash: str
    delete_files: bool = False
    request_id: str | None = None


def parser(routing_key: str) -> Callable[[dict[str, Any], CommandContext, Config], ControlCommand]:
    """The ``parse`` of one of the three commands."""

    def parse(data: dict[str, Any], context: CommandContext, cfg: Config) -> ControlCommand:
        """:raises InvalidCommand:"""
        fields = structure_fields(data, _RemoveBody if routing_key == REMOVE else _Body)
        try:
            keys = info_hash_keys(fields.hash)
        except ValueError as exc:
            raise InvalidCommand(INVALID_MESSAGE, f"field 'hash' {exc}") from None
        context.hash = keys[0] if len(keys[0]) == 40 else keys[1]
        return ControlCommand(
            routing_key=routing_key,
            given=fields.hash.lower(),
            keys=keys,
            delete_files=getattr(fields, "delete_files", False),
            request_id=context.request_id,
        )

    return parse


def carry_out(
    qbit: QbitClient, commands: Sequence[ControlCommand], cfg: Config, tracked: BatchView
) -> list[Outcome]:
    return [_one(qbit, command, cfg, tracked) for command in commands]


def _one(qbit: QbitClient, command: ControlCommand, cfg: Config, tracked: BatchView) -> Outcome:
    download = tracked.find(command.keys)
    keys = download.keys if download is not None else command.keys
    try:
        torrent = find(index_torrents(qbit.torrents(keys)), keys)
        if torrent is None and download is None:
            # A hybrid named by its v1 hash is listed under its v2 id, which no filter can
            # name: among the managed torrents (or all of them, when others may be controlled).
            if cfg.commands.control_unmanaged:
                candidates = qbit.all_torrents()
            else:
                candidates = qbit.tagged(MANAGED_TAG)
            torrent = find(index_torrents(candidates, set(keys)), keys)
    except QbitConsumerError as exc:
        return exc
    if torrent is None:
        return _absent(command, download, tracked)
    if not cfg.commands.control_unmanaged and MANAGED_TAG not in torrent.tags:
        return InvalidCommand(
            NOT_MANAGED,
            f"{torrent.name!r} ({torrent.id}) has no {MANAGED_TAG!r} tag: this service did not "
            "add it, and [commands] control_unmanaged is false",
        )
    if command.routing_key == REMOVE:
        return _remove(qbit, command, torrent, download, tracked)
    return _switch(qbit, command, torrent, download, tracked, stop=command.routing_key == PAUSE)


def _absent(command: ControlCommand, download: Download | None, tracked: BatchView) -> Outcome:
    """qBittorrent holds no such torrent. A remove whose effect holds is acked without an
    event of its own: a tracked download's removal is reported by the poll (by this command if
    it was its doing, from ``pending``, after a crash), and one reported before is a repeat."""
    if download is not None:
        if command.routing_key == REMOVE:
            return _gone_already(command)
        detail = f"qBittorrent no longer holds {command.given}; its removal will be reported"
        return InvalidCommand(NOT_FOUND, detail)
    removed_before = tracked.was_tracked(command.keys)  # one look at the state file
    if command.routing_key == REMOVE and removed_before:
        return _gone_already(command)
    detail = f"qBittorrent holds no torrent {command.given}"
    if not removed_before:
        detail += ", and this service never tracked one"
    return InvalidCommand(NOT_FOUND, detail)


def _remove(
    qbit: QbitClient,
    command: ControlCommand,
    torrent: Torrent,
    download: Download | None,
    tracked: BatchView,
) -> Outcome:
    pending = PENDING_REMOVE_FILES if command.delete_files else PENDING_REMOVE
    failed = _ask(
        tracked,
        download,
        pending,
        lambda: qbit.remove_torrent(torrent.id, delete_files=command.delete_files),
    )
    if failed is not None:
        return failed
    event = Removed(
        **_identity(command, torrent, download),
        reason=BY_COMMAND,
        files_deleted=command.delete_files,
        last_state=torrent.state,
        last_progress=torrent.progress,
        completed=(
            download.stage == "completed" if download is not None else torrent.amount_left == 0
        ),
    )
    ended = (download,) if download is not None else ()
    line = "removed with its files" if command.delete_files else "removed"
    return _done(command, (event,), ended=ended, line=line)


def _switch(
    qbit: QbitClient,
    command: ControlCommand,
    torrent: Torrent,
    download: Download | None,
    tracked: BatchView,
    *,
    stop: bool,
) -> Outcome:
    """Pause (``stop``) or resume. Already so in qBittorrent: no call; an event only if the
    change was not reported yet (by the command if it was its own, after a crash)."""
    pending = PENDING_PAUSE if stop else PENDING_RESUME
    if (torrent.state in PAUSED) == stop:
        if download is None or download.paused == stop:
            return _unchanged(f"{'paused' if stop else 'running'} already")
        by = BY_COMMAND if download.pending == pending else BY_EXTERNAL
        return _switched(command, torrent, download, stop=stop, by=by)
    failed = _ask(
        tracked,
        download,
        pending,
        lambda: (qbit.pause_torrent if stop else qbit.resume_torrent)(torrent.id),
    )
    if failed is not None:
        return failed
    # Done all the same if the look afterwards fails: the event says the state last seen.
    with contextlib.suppress(QbitConsumerError):
        torrent = _settled(qbit, torrent, stop=stop)
    return _switched(command, torrent, download, stop=stop, by=BY_COMMAND)


def _ask(
    tracked: BatchView,
    download: Download | None,
    pending: str,
    call: Callable[[], None],
) -> QbitConsumerError | None:
    """Note the change (a tracked download), ask qBittorrent for it, and take the note back if
    qBittorrent could not be asked: then the command is retried, and nothing is pending."""
    noted = tracked.intend(download, pending) if download is not None else None
    try:
        call()
    except QbitConsumerError as exc:
        if noted is not None:
            tracked.intend(noted, None)
        return exc
    return None


def _switched(
    command: ControlCommand, torrent: Torrent, download: Download | None, *, stop: bool, by: str
) -> Done:
    kind = Paused if stop else Resumed
    event = kind(
        **_identity(command, torrent, download),
        state=torrent.state,
        progress=torrent.progress,
        by=by,
    )
    updated = () if download is None else (attrs.evolve(download, paused=stop, pending=None),)
    return _done(command, (event,), updated=updated, line="paused" if stop else "resumed")


def _settled(qbit: QbitClient, torrent: Torrent, *, stop: bool) -> Torrent:
    """The torrent as qBittorrent lists it once the pause or resume shows (or as it is after
    ``SETTLE_SECONDS``): the event says the state it is in."""
    deadline = time.monotonic() + SETTLE_SECONDS
    current = torrent
    while True:
        listed = qbit.torrents([torrent.id])
        current = listed[0] if listed else current
        if (current.state in PAUSED) == stop or time.monotonic() >= deadline:
            return current
        time.sleep(0.05)


def _identity(
    command: ControlCommand, torrent: Torrent, download: Download | None
) -> dict[str, Any]:
    """A tracked download's own identity; an untracked torrent's as qBittorrent lists it (its
    hash by the magnet rule, ``Torrent.hash``)."""
    if download is not None:
        return {
            "request_id": command.request_id or download.request_id,
            "hash": download.hash,
            "infohash_v2": download.infohash_v2,
            "name": download.name,
            "category": download.category,
        }
    return {
        "request_id": command.request_id,
        "hash": torrent.hash,
        "infohash_v2": torrent.infohash_v2,
        "name": torrent.name,
        "category": None,
    }


def _gone_already(command: ControlCommand) -> Done:
    return _unchanged(f"remove: {command.given} is gone already")


def _unchanged(log_line: str) -> Done:
    """Its effect was there already (a repeat, a redelivery): acked without an event."""
    return Done(events=(), outcome=UNCHANGED, log_line=log_line)


def _done(
    command: ControlCommand,
    events: tuple[Event, ...],
    *,
    updated: tuple[Download, ...] = (),
    ended: tuple[Download, ...] = (),
    line: str,
) -> Done:
    return Done(
        events=events,
        outcome=_OUTCOMES[command.routing_key],
        update=updated,
        end=ended,
        log_line=f"{command.routing_key.removeprefix('downloads.')}: {command.given} {line}",
    )
