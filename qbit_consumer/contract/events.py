"""The events this service publishes on the event exchange (CONTRACT section 5).

One attrs class per event; all share the envelope. ``to_json`` writes the envelope fields first,
in the contract's order, so that a person reading a queue in the management UI sees them first.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import attrs

SCHEMA_VERSION: Final = 1
#: Who paused, resumed or removed a download (``by``; ``reason`` of a removal).
BY_COMMAND: Final = "command"
BY_EXTERNAL: Final = "external"
#: What a ``downloads.add`` carried (``source`` of ``received``).
MAGNET: Final = "magnet"
TORRENT: Final = "torrent"


def rfc3339(epoch: float | None = None) -> str:
    """The one way every time on the wire is written: UTC with milliseconds and a ``Z``, as in
    ``2026-11-24T08:00:00.123Z``; ``epoch`` (seconds), or now."""
    when = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_rfc3339(text: str) -> datetime:
    """A time written as ``rfc3339`` writes it, read back with its zone.

    :raises ValueError: it is not such a time.
    """
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wire_json(body: dict[str, Any]) -> bytes:
    """A body as every message goes on the wire: compact UTF-8 JSON, other scripts as they are."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@attrs.frozen(kw_only=True)
class Event:
    """The envelope. ``hash`` is the download's stable key; null only for polling events and
    for commands that failed before their magnet was understood."""

    name_of_event: ClassVar[str] = ""
    persistent: ClassVar[bool] = True

    request_id: str | None
    hash: str | None
    infohash_v2: str | None
    name: str | None
    category: str | None
    event_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    occurred_at: str = attrs.field(factory=rfc3339)

    @property
    def routing_key(self) -> str:
        return self.name_of_event

    def to_dict(self) -> dict[str, Any]:
        fields = attrs.asdict(self, recurse=False)
        envelope = {
            "schema": SCHEMA_VERSION,
            "event": self.name_of_event,
            "event_id": fields.pop("event_id"),
            "occurred_at": fields.pop("occurred_at"),
        }
        for key in ("request_id", "hash", "infohash_v2", "name", "category"):
            envelope[key] = fields.pop(key)
        envelope.update(fields)
        return envelope

    def to_json(self) -> bytes:
        return wire_json(self.to_dict())

    def envelope(self) -> Envelope:
        """The event as it goes out; serialised here, once."""
        return Envelope(
            routing_key=self.routing_key,
            body=self.to_json(),
            event_id=self.event_id,
            hash=self.hash,
            request_id=self.request_id,
            persistent=self.persistent,
        )


@attrs.define(slots=True, kw_only=True)
class Envelope:
    """An event as it goes out, the one shape it has from the moment it is recorded to the
    wire, and back out of the outbox after a restart: the body is serialised once and never
    changes, beside what the AMQP properties need (``event_id`` is the ``message_id``,
    ``request_id`` the ``correlation_id``). ``seq`` is a lifecycle event's number in the
    outbox, None for progress and for the events of a command (published before its ack).
    Mutable only so that a newer progress event can take a waiting one's place in the queue.
    """

    routing_key: str
    body: bytes
    event_id: str
    hash: str | None
    request_id: str | None
    persistent: bool
    seq: int | None = None


@attrs.frozen(kw_only=True)
class Received(Event):
    name_of_event: ClassVar[str] = "downloads.received"
    magnet: str | None  # None for a .torrent file
    source: str  # MAGNET or TORRENT


@attrs.frozen(kw_only=True)
class Added(Event):
    name_of_event: ClassVar[str] = "downloads.added"
    save_path: str
    duplicate: bool


@attrs.frozen(kw_only=True)
class Progress(Event):
    name_of_event: ClassVar[str] = "downloads.progress"
    persistent: ClassVar[bool] = False
    state: str
    progress: float
    downloaded: int
    size: int
    dlspeed: int
    upspeed: int
    eta: int | None
    num_seeds: int
    num_peers: int


@attrs.frozen(kw_only=True)
class Completed(Event):
    name_of_event: ClassVar[str] = "downloads.completed"
    size: int
    save_path: str
    content_path: str
    completed_at: str


@attrs.frozen(kw_only=True)
class Stalled(Event):
    name_of_event: ClassVar[str] = "downloads.stalled"
    state: str
    progress: float
    stalled_seconds: float


@attrs.frozen(kw_only=True)
class Paused(Event):
    name_of_event: ClassVar[str] = "downloads.paused"
    state: str
    progress: float
    by: str  # BY_COMMAND or BY_EXTERNAL


@attrs.frozen(kw_only=True)
class Resumed(Event):
    name_of_event: ClassVar[str] = "downloads.resumed"
    state: str
    progress: float
    by: str  # BY_COMMAND or BY_EXTERNAL


@attrs.frozen(kw_only=True)
class Errored(Event):
    name_of_event: ClassVar[str] = "downloads.errored"
    state: str
    detail: str


@attrs.frozen(kw_only=True)
class Removed(Event):
    name_of_event: ClassVar[str] = "downloads.removed"
    reason: str  # BY_COMMAND or BY_EXTERNAL: who removed it
    files_deleted: bool | None  # None: not known (someone else removed it)
    last_state: str | None
    last_progress: float | None
    completed: bool


@attrs.frozen(kw_only=True)
class Failed(Event):
    name_of_event: ClassVar[str] = "downloads.failed"
    reason: str
    detail: str
    command: str | None  # its routing key; None when not even that is known


@attrs.frozen(kw_only=True)
class PollingFailed(Event):
    name_of_event: ClassVar[str] = "downloads.polling_failed"
    consecutive_failures: int
    error: str
    since: str


@attrs.frozen(kw_only=True)
class PollingRecovered(Event):
    name_of_event: ClassVar[str] = "downloads.polling_recovered"
    outage_seconds: float


EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.name_of_event: cls
    for cls in (
        Received,
        Added,
        Progress,
        Completed,
        Stalled,
        Paused,
        Resumed,
        Errored,
        Removed,
        Failed,
        PollingFailed,
        PollingRecovered,
    )
}
