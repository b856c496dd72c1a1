"""``downloads.add``: its body (a magnet, or a .torrent file in base64), its events, and what
a carried-out add becomes.

How the commands of a batch become torrents in qBittorrent is ``batch``'s part;
``carry_out`` runs on the consumer's qBittorrent thread (it blocks on HTTP; the broker thread
waits).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import attrs

from qbit_consumer.commands.batch import AddResult, add_downloads
from qbit_consumer.commands.outcomes import Done, Outcome
from qbit_consumer.commands.tracked import BatchView
from qbit_consumer.config import Config
from qbit_consumer.contract.events import MAGNET, TORRENT, Added, Received
from qbit_consumer.contract.magnet import Magnet, parse_magnet
from qbit_consumer.contract.messages import MAX_BODY_BYTES, CommandContext, structure_fields
from qbit_consumer.contract.status import ADDED, DUPLICATE
from qbit_consumer.contract.structure import short_repr
from qbit_consumer.contract.torrentfile import TorrentFile, base64_length, parse_torrent
from qbit_consumer.errors import INVALID_CATEGORY, INVALID_MESSAGE, TOO_LARGE, InvalidCommand
from qbit_consumer.model import Download
from qbit_consumer.qbit import QbitClient

ROUTING_KEY: Final = "downloads.add"
MAX_TAGS: Final = 32
MAX_TAG_CHARS: Final = 100

# qBittorrent joins tags with commas, so a comma would split one tag into two.
_TAG_RE: Final = re.compile(r"^[^,\x00-\x1f\x7f]+$")


@attrs.frozen(kw_only=True)
class AddCommand:
    source: Magnet | TorrentFile
    category: str
    request_id: str | None
    tags: tuple[str, ...]


@attrs.frozen(kw_only=True)
class _Body:
    category: str
    magnet: str | None = None
    torrent: str | None = None
    request_id: str | None = None
    tags: list[str] = attrs.field(factory=list)


def body_limit(cfg: Config) -> int:
    """The largest body an add may have: 64 KiB, plus a .torrent of ``max_torrent_bytes`` in
    base64 (CONTRACT section 4)."""
    return MAX_BODY_BYTES + base64_length(cfg.commands.max_torrent_bytes)


def parse(data: dict[str, Any], context: CommandContext, cfg: Config) -> AddCommand:
    """:raises InvalidCommand: with the reason code and a one-sentence detail."""
    fields = structure_fields(data, _Body)
    if (fields.magnet is None) == (fields.torrent is None):
        raise InvalidCommand(
            INVALID_MESSAGE, "exactly one of the fields 'magnet' and 'torrent' is required"
        )
    source: Magnet | TorrentFile
    if fields.magnet is not None:
        if context.size > MAX_BODY_BYTES:  # the larger limit is for a .torrent file only
            raise InvalidCommand(
                TOO_LARGE, f"body is {context.size} bytes, the limit is {MAX_BODY_BYTES}"
            )
        source = parse_magnet(fields.magnet)
    else:
        assert fields.torrent is not None
        source = parse_torrent(fields.torrent, cfg.commands.max_torrent_bytes)
    context.hash, context.infohash_v2, context.name = (
        source.hash,
        source.infohash_v2,
        source.display_name,
    )
    categories = cfg.categories
    if fields.category not in categories:
        raise InvalidCommand(
            INVALID_CATEGORY,
            f"category {short_repr(fields.category)} is not one of {', '.join(sorted(categories))}",
        )
    context.category = fields.category
    return AddCommand(
        source=source,
        category=fields.category,
        request_id=context.request_id,
        tags=_check_tags(fields.tags),
    )


def received(command: AddCommand) -> Received:
    source = command.source
    is_magnet = isinstance(source, Magnet)
    return Received(
        request_id=command.request_id,
        hash=source.hash,
        infohash_v2=source.infohash_v2,
        name=source.display_name,
        category=command.category,
        magnet=source.uri if is_magnet else None,
        source=MAGNET if is_magnet else TORRENT,
    )


def carry_out(
    qbit: QbitClient, commands: Sequence[AddCommand], cfg: Config, _tracked: BatchView
) -> list[Outcome]:
    """Each command's outcome: its ``added`` event and the download to track, or its error
    (qBittorrent itself says what it holds already: no need to look at what is tracked)."""
    results = add_downloads(qbit, commands, cfg.categories.__getitem__)
    return [
        _done(command, result) if isinstance(result, AddResult) else result
        for command, result in zip(commands, results, strict=True)
    ]


def _done(command: AddCommand, result: AddResult) -> Done:
    source, torrent = command.source, result.torrent
    added = Added(
        request_id=command.request_id,
        hash=source.hash,
        infohash_v2=source.infohash_v2,
        name=torrent.name,
        category=command.category,
        save_path=torrent.save_path,
        duplicate=result.duplicate,
    )
    download = Download.added(
        hash=source.hash,
        qbit_id=torrent.id,
        infohash_v1=source.infohash_v1,
        infohash_v2=source.infohash_v2 or torrent.infohash_v2,
        request_id=command.request_id,
        category=command.category,
        name=torrent.name,
        added_on=torrent.added_on,
    )
    return Done(
        events=(added,),
        outcome=DUPLICATE if result.duplicate else ADDED,
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
