"""How commands become torrents in qBittorrent, one batch at a time.

Commands that are already waiting are handled together: one ``torrents/info?hashes=`` call
to find duplicates, one ``torrents/add`` per (category, save path, tags) group with all its
magnets, and one wait until qBittorrent lists them. Each command still gets its own outcome:
an ``AddResult``, or the ``InvalidCommand``/``TransientError`` that concerns it alone.

When qBittorrent does not list a magnet of a batch (it answers ``Ok.`` as soon as one magnet
of a batch was accepted, so a refused one cannot be told apart), that magnet is added again on
its own, which gives a precise answer.

Runs on the consumer's qBittorrent thread (it blocks on HTTP; the broker thread waits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from qbit_consumer.contract.messages import MANAGED_TAG, AddCommand
from qbit_consumer.errors import (
    QBITTORRENT_REJECTED,
    InvalidCommand,
    QbitConsumerError,
    TransientError,
)
from qbit_consumer.model import Torrent, index_torrents
from qbit_consumer.qbit.client import QbitClient

#: qBittorrent adds torrents asynchronously; how long a new one may take to be listed.
LIST_TIMEOUT_SECONDS: Final = 15.0
#: How long to wait for a batch before adding the missing ones again, one by one.
BATCH_LIST_SECONDS: Final = 2.0


@attrs.frozen(kw_only=True)
class AddResult:
    torrent: Torrent
    duplicate: bool


Outcome = AddResult | QbitConsumerError


def add_downloads(
    qbit: QbitClient, commands: Sequence[AddCommand], save_path_of: Callable[[str], str]
) -> list[Outcome]:
    """Make sure qBittorrent holds the torrent of each command; one outcome per command.

    A torrent qBittorrent already has (or that an earlier command of the same batch adds) is
    a duplicate, not an error: it gets our tags; its category and save path stay as they are
    (we never move a user's files).
    """
    outcomes: list[Outcome | None] = [None] * len(commands)
    try:
        listed = index_torrents(qbit.torrents(set().union(*(c.magnet.keys for c in commands))))
    except QbitConsumerError as exc:
        return [exc] * len(commands)
    first_of: dict[str, int] = {}  # hash -> the batch's first command for it
    for i, command in enumerate(commands):
        existing = _match(listed, command)
        if existing is not None:
            outcomes[i] = _duplicate(qbit, existing, command)
        elif command.magnet.hash not in first_of:
            first_of[command.magnet.hash] = i

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
            accepted = qbit.add_magnet(
                "\n".join(commands[i].magnet.uri for i in members),
                category=category,
                tags=tags,
                save_path=save_path,
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
            first = outcomes[first_of[command.magnet.hash]]
            outcomes[i] = (
                _duplicate(qbit, first.torrent, command) if isinstance(first, AddResult) else first
            )
    return [o for o in outcomes if o is not None]


def _add_one(qbit: QbitClient, command: AddCommand, save_path: str) -> Outcome:
    try:
        accepted = qbit.add_magnet(
            command.magnet.uri, category=command.category, tags=_tags(command), save_path=save_path
        )
        if not accepted:
            # A hybrid torrent added earlier from a v1-only magnet is re-keyed to its v2 id once
            # its metadata arrives; hashes= cannot find it by v1, a full listing can.
            existing = _match(index_torrents(qbit.torrents(command.magnet.keys)), command) or next(
                (t for t in qbit.all_torrents() if t.matches(command.magnet.keys)), None
            )
            if existing is None:
                return InvalidCommand(QBITTORRENT_REJECTED, "qBittorrent refused the magnet link")
            return _duplicate(qbit, existing, command)
        outcomes: list[Outcome | None] = [None]
        if _wait_listed(qbit, [command], [0], outcomes, LIST_TIMEOUT_SECONDS):
            return TransientError(
                "qBittorrent accepted the magnet but did not list it "
                f"within {LIST_TIMEOUT_SECONDS:g} s"
            )
        assert outcomes[0] is not None
        return outcomes[0]
    except QbitConsumerError as exc:
        return exc


def _wait_listed(
    qbit: QbitClient,
    commands: Sequence[AddCommand],
    waiting: list[int],
    outcomes: list[Outcome | None],
    timeout: float,
) -> list[int]:
    """Fill ``outcomes`` for the commands qBittorrent lists within ``timeout``; the rest."""
    deadline = time.monotonic() + timeout
    pause = 0.005  # qBittorrent usually lists a new torrent within milliseconds
    while waiting:
        try:
            listed = index_torrents(
                qbit.torrents(set().union(*(commands[i].magnet.keys for i in waiting)))
            )
        except QbitConsumerError as exc:
            for i in waiting:
                outcomes[i] = exc
            return []
        still = []
        for i in waiting:
            torrent = _match(listed, commands[i])
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


def _duplicate(qbit: QbitClient, torrent: Torrent, command: AddCommand) -> Outcome:
    """A torrent qBittorrent already holds: it gets this command's tags, nothing else."""
    try:
        qbit.add_tags(torrent.id, _tags(command))
    except QbitConsumerError as exc:
        return exc
    return AddResult(torrent=torrent, duplicate=True)


def _tags(command: AddCommand) -> tuple[str, ...]:
    return (MANAGED_TAG, *command.tags)


def _match(index: dict[str, Torrent], command: AddCommand) -> Torrent | None:
    return next((index[key] for key in command.magnet.keys if key in index), None)
