"""How a batch of ``downloads.add`` commands becomes torrents in qBittorrent.

Commands that are already waiting are handled together: one ``torrents/info?hashes=`` call
to find duplicates, one ``torrents/add`` per (category, save path, tags) group with all its
magnets (and one with all its .torrent files), and one wait until qBittorrent lists them.
Each command still gets its own outcome: an ``AddResult``, or the ``QbitConsumerError`` that
concerns it alone.

When qBittorrent does not list a magnet of a batch (it answers ``Ok.`` as soon as one magnet
of a batch was accepted, so a refused one cannot be told apart), that magnet is added again on
its own, which gives a precise answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import attrs

from qbit_consumer.contract.magnet import Magnet
from qbit_consumer.contract.messages import MANAGED_TAG
from qbit_consumer.contract.torrentfile import TorrentFile
from qbit_consumer.errors import QbitConsumerError, TransientError
from qbit_consumer.model import Torrent, find, index_torrents
from qbit_consumer.qbit import QbitClient

#: qBittorrent adds torrents asynchronously; how long a new one may take to be listed.
LIST_TIMEOUT_SECONDS: Final = 15.0
#: How long to wait for a batch before adding the missing ones again, one by one.
BATCH_LIST_SECONDS: Final = 2.0
#: Before a magnet that qBittorrent refused to add again counts as refused, the pause between
#: the two full listings that look for it (see ``_held_already``).
RELIST_PAUSE_SECONDS: Final = 1.0
#: How long a torrent just taken may go unlisted under its ids before the managed-tag listing
#: is searched too (see ``_wait_listed``), and how often it is searched from then on.
TAGGED_LOOK_SECONDS: Final = 0.5


class AddCommand(Protocol):
    """What a batch needs of an add command (``add.AddCommand`` is one)."""

    @property
    def source(self) -> Magnet | TorrentFile: ...

    @property
    def category(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


@attrs.frozen(kw_only=True)
class AddResult:
    torrent: Torrent
    duplicate: bool


AddOutcome = AddResult | QbitConsumerError


def add_downloads(
    qbit: QbitClient, commands: Sequence[AddCommand], save_path_of: Callable[[str], str]
) -> list[AddOutcome]:
    """Make sure qBittorrent holds the torrent of each command; one outcome per command.

    A torrent qBittorrent already has (or that an earlier command of the same batch adds) is
    a duplicate, not an error: it gets our tags; its category and save path stay as they are
    (we never move a user's files).
    """
    outcomes: list[AddOutcome | None] = [None] * len(commands)
    try:
        listed = index_torrents(qbit.torrents({key for c in commands for key in c.source.keys}))
    except QbitConsumerError as exc:
        return [exc] * len(commands)
    first_of: dict[str, int] = {}  # hash -> the batch's first command for it
    for i, command in enumerate(commands):
        existing = find(listed, command.source.keys)
        if existing is not None:
            outcomes[i] = _duplicate(qbit, existing, command)
        elif command.source.hash not in first_of:
            first_of[command.source.hash] = i

    groups: dict[tuple[str, str, tuple[str, ...]], list[int]] = {}
    for i in first_of.values():
        command = commands[i]
        groups.setdefault(
            (command.category, save_path_of(command.category), _tags(command)), []
        ).append(i)
    to_list: list[int] = []
    for (category, save_path, tags), members in groups.items():
        try:
            qbit.ensure_category(category, save_path)
            accepted = _add(
                qbit, [commands[i] for i in members], category, tags=tags, save_path=save_path
            )
        except QbitConsumerError as exc:
            for i in members:
                outcomes[i] = exc
            continue
        if accepted:
            to_list.extend(members)
        else:
            for i in members:  # nothing accepted: find out one by one
                outcomes[i] = _add_one(qbit, commands[i], save_path)

    missing = _wait_listed(
        qbit,
        commands,
        to_list,
        outcomes,
        BATCH_LIST_SECONDS if len(to_list) > 1 else LIST_TIMEOUT_SECONDS,
    )
    for i in missing:
        outcomes[i] = _add_one(qbit, commands[i], save_path_of(commands[i].category))

    for i, command in enumerate(commands):  # later commands of the batch for the same hash
        if outcomes[i] is None:
            first = outcomes[first_of[command.source.hash]]
            outcomes[i] = (
                _duplicate(qbit, first.torrent, command) if isinstance(first, AddResult) else first
            )
    return [o for o in outcomes if o is not None]


def _add_one(qbit: QbitClient, command: AddCommand, save_path: str) -> AddOutcome:
    """Add one magnet and wait until it is listed.

    qBittorrent's ``Fails.`` (409 from 5.2) for a torrent it does not list is no rejection:
    it answers so for a torrent it is still loading (accepted a moment ago, not listed yet,
    which takes seconds on a busy machine), and the magnet itself was checked before. So it is
    retried, and dead-lettered ``retries_exhausted`` if it never shows up. A 4xx, a refusal of
    the request itself, is ``qbittorrent_rejected`` at once (``QbitClient.add_magnet``).
    """
    try:
        accepted = _add(qbit, [command], command.category, tags=_tags(command), save_path=save_path)
        if not accepted:
            existing = _held_already(qbit, command.source.keys)
            if existing is not None:
                return _duplicate(qbit, existing, command)
            return TransientError(
                "qBittorrent refused the torrent and lists no torrent for it (it may still be "
                "adding it)"
            )
        outcomes: list[AddOutcome | None] = [None]
        if _wait_listed(qbit, [command], [0], outcomes, LIST_TIMEOUT_SECONDS):
            return TransientError(
                "qBittorrent accepted the torrent but did not list it "
                f"within {LIST_TIMEOUT_SECONDS:g} s"
            )
        assert outcomes[0] is not None
        return outcomes[0]
    except QbitConsumerError as exc:
        return exc


def _held_already(qbit: QbitClient, keys: Sequence[str]) -> Torrent | None:
    """The torrent qBittorrent holds for ``keys``, after it refused to add them again.

    A hybrid torrent added from a v1-only magnet is re-keyed to its v2 id once its metadata
    arrives: ``hashes=`` cannot find it by v1 then, a full listing can. A full listing that
    misses it is asked once more a moment later (a torrent still loading, or being re-keyed,
    is listed under neither id), which spares a retry in the usual case.
    """
    existing = find(index_torrents(qbit.torrents(keys)), keys)
    for pause in (0.0, RELIST_PAUSE_SECONDS):
        if existing is not None:
            break
        time.sleep(pause)
        existing = find(index_torrents(qbit.all_torrents()), keys)
    return existing


def _wait_listed(
    qbit: QbitClient,
    commands: Sequence[AddCommand],
    waiting: list[int],
    outcomes: list[AddOutcome | None],
    timeout: float,
) -> list[int]:
    """Fill ``outcomes`` for the commands qBittorrent lists within ``timeout``; the rest.

    ``hashes=`` finds a torrent by its id only. A hybrid torrent added from a v1-only magnet
    whose metadata comes at once (a peer named in the magnet) is re-keyed to its v2 id before
    it is first listed, often within milliseconds on qBittorrent 5.3, and no filter can name
    that id. So a torrent not found by its ids for ``TAGGED_LOOK_SECONDS`` is looked for, by
    its v1 hash, among the managed-tag ones (which it is, having been added with that tag);
    a cheaper listing than a full one on a large library, and only then.
    """
    start = time.monotonic()
    deadline, next_tagged_look = start + timeout, start + TAGGED_LOOK_SECONDS
    pause = 0.005  # qBittorrent usually lists a new torrent within milliseconds
    while waiting:
        wanted = {key for i in waiting for key in commands[i].source.keys}
        try:
            listed = index_torrents(qbit.torrents(wanted))
            if time.monotonic() >= next_tagged_look:
                listed = index_torrents(qbit.tagged(MANAGED_TAG), wanted) | listed
                next_tagged_look = time.monotonic() + TAGGED_LOOK_SECONDS
        except QbitConsumerError as exc:
            for i in waiting:
                outcomes[i] = exc
            return []
        still = []
        for i in waiting:
            torrent = find(listed, commands[i].source.keys)
            if torrent is None:
                still.append(i)
            else:
                outcomes[i] = AddResult(torrent=torrent, duplicate=False)
        waiting = still
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    return waiting


def _add(
    qbit: QbitClient,
    commands: Sequence[AddCommand],
    category: str,
    *,
    tags: tuple[str, ...],
    save_path: str,
) -> bool:
    """One ``torrents/add`` for the magnets and one for the .torrent files; whether qBittorrent
    took anything new."""
    magnets = [c.source.uri for c in commands if isinstance(c.source, Magnet)]
    files = [c.source.data for c in commands if isinstance(c.source, TorrentFile)]
    accepted = False
    if magnets:
        accepted = qbit.add_magnet(
            "\n".join(magnets), category=category, tags=tags, save_path=save_path
        )
    if files:
        took = qbit.add_torrent_files(files, category=category, tags=tags, save_path=save_path)
        accepted = accepted or took
    return accepted


def _duplicate(qbit: QbitClient, torrent: Torrent, command: AddCommand) -> AddOutcome:
    """A torrent qBittorrent already holds: it gets this command's tags, nothing else."""
    try:
        qbit.add_tags(torrent.id, _tags(command))
    except QbitConsumerError as exc:
        return exc
    return AddResult(torrent=torrent, duplicate=True)


def _tags(command: AddCommand) -> tuple[str, ...]:
    return (MANAGED_TAG, *command.tags)
