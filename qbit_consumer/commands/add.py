"""``downloads.add``: its body, its events, and how a batch of them becomes torrents.

Commands that are already waiting are handled together: one ``torrents/info?hashes=`` call
to find duplicates, one ``torrents/add`` per (category, save path, tags) group with all its
magnets, and one wait until qBittorrent lists them. Each command still gets its own outcome:
an ``AddResult``, or the ``InvalidCommand``/``TransientError`` that concerns it alone.

When qBittorrent does not list a magnet of a batch (it answers ``Ok.`` as soon as one magnet
of a batch was accepted, so a refused one cannot be told apart), that magnet is added again on
its own, which gives a precise answer.

``carry_out`` runs on the consumer's qBittorrent thread (it blocks on HTTP; the broker thread
waits).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from qbit_consumer.commands.outcomes import Done, Outcome
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Added, Received
from qbit_consumer.contract.magnet import Magnet, parse_magnet
from qbit_consumer.contract.messages import MANAGED_TAG, CommandContext, structure_fields
from qbit_consumer.contract.structure import short_repr
from qbit_consumer.errors import (
    INVALID_CATEGORY,
    INVALID_MESSAGE,
    InvalidCommand,
    QbitConsumerError,
    TransientError,
)
from qbit_consumer.model import Download, Torrent, find, index_torrents
from qbit_consumer.qbit import QbitClient

ROUTING_KEY: Final = "downloads.add"
MAX_TAGS: Final = 32
MAX_TAG_CHARS: Final = 100
#: qBittorrent adds torrents asynchronously; how long a new one may take to be listed.
LIST_TIMEOUT_SECONDS: Final = 15.0
#: How long to wait for a batch before adding the missing ones again, one by one.
BATCH_LIST_SECONDS: Final = 2.0
#: Before a magnet that qBittorrent refused to add again counts as refused, the pause between
#: the two full listings that look for it (see ``_held_already``).
RELIST_PAUSE_SECONDS: Final = 1.0

# qBittorrent joins tags with commas, so a comma would split one tag into two.
_TAG_RE: Final = re.compile(r"^[^,\x00-\x1f\x7f]+$")


@attrs.frozen(kw_only=True)
class AddCommand:
    magnet: Magnet
    category: str
    request_id: str | None
    tags: tuple[str, ...]


@attrs.frozen(kw_only=True)
class _Body:
    magnet: str
    category: str
    request_id: str | None = None
    tags: list[str] = attrs.field(factory=list)


def parse(data: dict[str, Any], context: CommandContext, cfg: Config) -> AddCommand:
    """:raises InvalidCommand: with the reason code and a one-sentence detail."""
    fields = structure_fields(data, _Body)
    magnet = parse_magnet(fields.magnet)
    context.hash, context.infohash_v2, context.name = (
        magnet.hash,
        magnet.infohash_v2,
        magnet.display_name,
    )
    categories = cfg.categories
    if fields.category not in categories:
        raise InvalidCommand(
            INVALID_CATEGORY,
            f"category {short_repr(fields.category)} is not one of {', '.join(sorted(categories))}",
        )
    context.category = fields.category
    return AddCommand(
        magnet=magnet,
        category=fields.category,
        request_id=context.request_id,
        tags=_check_tags(fields.tags),
    )


def received(command: AddCommand) -> Received:
    magnet = command.magnet
    return Received(
        request_id=command.request_id,
        hash=magnet.hash,
        infohash_v2=magnet.infohash_v2,
        name=magnet.display_name,
        category=command.category,
        magnet=magnet.uri,
    )


def carry_out(qbit: QbitClient, commands: Sequence[AddCommand], cfg: Config) -> list[Outcome]:
    """Each command's outcome: its ``added`` event and the download to track, or its error."""
    results = add_downloads(qbit, commands, cfg.categories.__getitem__)
    return [
        _done(command, result) if isinstance(result, AddResult) else result
        for command, result in zip(commands, results, strict=True)
    ]


def _done(command: AddCommand, result: AddResult) -> Done:
    magnet, torrent = command.magnet, result.torrent
    added = Added(
        request_id=command.request_id,
        hash=magnet.hash,
        infohash_v2=magnet.infohash_v2,
        name=torrent.name,
        category=command.category,
        save_path=torrent.save_path,
        duplicate=result.duplicate,
    )
    download = Download.added(
        hash=magnet.hash,
        qbit_id=torrent.id,
        infohash_v1=magnet.infohash_v1,
        infohash_v2=magnet.infohash_v2 or torrent.infohash_v2,
        request_id=command.request_id,
        category=command.category,
        name=torrent.name,
        added_on=torrent.added_on,
    )
    return Done(
        events=(added,),
        track=(download,),
        log_line=f"added {torrent.name}{' (already in qBittorrent)' if result.duplicate else ''}",
        log_fields={"duplicate": result.duplicate},
    )


def _check_tags(tags: list[str]) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise InvalidCommand(
            INVALID_MESSAGE, f"field 'tags' has {len(tags)} tags, at most {MAX_TAGS}"
        )
    for tag in tags:
        if not _TAG_RE.match(tag) or tag != tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidCommand(
                INVALID_MESSAGE,
                f"tag {short_repr(tag)} must be 1-{MAX_TAG_CHARS} characters without commas, "
                "control characters or surrounding spaces",
            )
    return tuple(dict.fromkeys(tags))


# -- a batch of adds in qBittorrent ---------------------------------------------------------


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
        listed = index_torrents(qbit.torrents({key for c in commands for key in c.magnet.keys}))
    except QbitConsumerError as exc:
        return [exc] * len(commands)
    first_of: dict[str, int] = {}  # hash -> the batch's first command for it
    for i, command in enumerate(commands):
        existing = find(listed, command.magnet.keys)
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


def _add_one(qbit: QbitClient, command: AddCommand, save_path: str) -> AddOutcome:
    """Add one magnet and wait until it is listed.

    qBittorrent's ``Fails.`` (409 from 5.2) for a torrent it does not list is no rejection:
    it answers so for a torrent it is still loading (accepted a moment ago, not listed yet,
    which takes seconds on a busy machine), and the magnet itself was checked before. So it is
    retried, and dead-lettered ``retries_exhausted`` if it never shows up. A 4xx, a refusal of
    the request itself, is ``qbittorrent_rejected`` at once (``QbitClient.add_magnet``).
    """
    try:
        accepted = qbit.add_magnet(
            command.magnet.uri, category=command.category, tags=_tags(command), save_path=save_path
        )
        if not accepted:
            existing = _held_already(qbit, command.magnet.keys)
            if existing is not None:
                return _duplicate(qbit, existing, command)
            return TransientError(
                "qBittorrent refused the magnet and lists no torrent for it (it may still be "
                "adding it)"
            )
        outcomes: list[AddOutcome | None] = [None]
        if _wait_listed(qbit, [command], [0], outcomes, LIST_TIMEOUT_SECONDS):
            return TransientError(
                "qBittorrent accepted the magnet but did not list it "
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
    """Fill ``outcomes`` for the commands qBittorrent lists within ``timeout``; the rest."""
    deadline = time.monotonic() + timeout
    pause = 0.005  # qBittorrent usually lists a new torrent within milliseconds
    while waiting:
        try:
            listed = index_torrents(
                qbit.torrents({key for i in waiting for key in commands[i].magnet.keys})
            )
        except QbitConsumerError as exc:
            for i in waiting:
                outcomes[i] = exc
            return []
        still = []
        for i in waiting:
            torrent = find(listed, commands[i].magnet.keys)
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


def _duplicate(qbit: QbitClient, torrent: Torrent, command: AddCommand) -> AddOutcome:
    """A torrent qBittorrent already holds: it gets this command's tags, nothing else."""
    try:
        qbit.add_tags(torrent.id, _tags(command))
    except QbitConsumerError as exc:
        return exc
    return AddResult(torrent=torrent, duplicate=True)


def _tags(command: AddCommand) -> tuple[str, ...]:
    return (MANAGED_TAG, *command.tags)
