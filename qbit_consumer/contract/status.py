"""``downloads.status``: how the running bridge is (CONTRACT section 11), as it goes on the wire
and as ``qbit-consumer status`` reads it back.

It is not a download's event: it has no download envelope (no hash, name or category), it is
not kept in history, and the newest one waits in a last-value queue for anyone to read. The
platform tells a quiet bridge from a dead one by its age alone, so it goes out on a timer
whether or not anything happened.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs

from qbit_consumer.contract.events import SCHEMA_VERSION, Envelope, rfc3339, wire_json
from qbit_consumer.contract.messages import json_type, strict_converter
from qbit_consumer.contract.structure import FieldError, short_repr, structure

STATUS_EVENT: Final = "downloads.status"
#: ``role``: the only one until a group of processes elects one (CONTRACT section 9).
ACTIVE: Final = "active"

#: What became of the commands, the keys of ``commands``: an add carried out (``added``) or
#: found in qBittorrent already (``duplicate``); a remove, pause or resume carried out, or
#: found done already (``unchanged``); a command dead-lettered, or sent to the retry queue.
ADDED: Final = "added"
DUPLICATE: Final = "duplicate"
REMOVED: Final = "removed"
PAUSED: Final = "paused"
RESUMED: Final = "resumed"
UNCHANGED: Final = "unchanged"
DEAD_LETTERED: Final = "dead_lettered"
RETRIED: Final = "retried"
COMMAND_OUTCOMES: Final = (
    ADDED,
    DUPLICATE,
    REMOVED,
    PAUSED,
    RESUMED,
    UNCHANGED,
    DEAD_LETTERED,
    RETRIED,
)


@attrs.frozen(kw_only=True)
class QbittorrentStatus:
    """Whether the last poll got an answer; ``since`` when that last changed (null before the
    first poll); ``version`` as qBittorrent names itself (``v5.3.0``), once it answered."""

    reachable: bool
    since: str | None
    version: str | None


@attrs.frozen(kw_only=True)
class TrackedCounts:
    """Downloads tracked, and how many of them are not complete yet (``active``: each gets a
    progress event every cycle)."""

    total: int
    active: int


@attrs.frozen(kw_only=True)
class LastPoll:
    """When the last poll cycle began, and how long it took (a failed one too)."""

    at: str
    seconds: float


@attrs.frozen(kw_only=True)
class Status:
    instance: str
    version: str
    started_at: str
    uptime_seconds: int
    role: str
    qbittorrent: QbittorrentStatus
    tracked: TrackedCounts
    #: Since the process started, by outcome (every key of ``COMMAND_OUTCOMES``).
    commands: Mapping[str, int]
    #: Events the broker confirmed since the process started, by event name.
    events: Mapping[str, int]
    #: Lifecycle events recorded but not confirmed by the broker yet.
    outbox: int
    last_poll: LastPoll | None
    event_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    occurred_at: str = attrs.field(factory=rfc3339)

    def to_dict(self) -> dict[str, Any]:
        """In the contract's order: what identifies the message first, as events do."""
        fields = attrs.asdict(self)
        return {
            "schema": SCHEMA_VERSION,
            "event": STATUS_EVENT,
            "event_id": fields.pop("event_id"),
            "occurred_at": fields.pop("occurred_at"),
            **fields,
        }

    def envelope(self) -> Envelope:
        return Envelope(
            routing_key=STATUS_EVENT,
            body=wire_json(self.to_dict()),
            event_id=self.event_id,
            hash=None,
            request_id=None,
            persistent=True,
        )


def read_status(body: bytes) -> Status:
    """A ``downloads.status`` body as typed data; fields a newer version added are ignored.

    :raises FieldError: it is not one (the sentence names the field that is wrong).
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise FieldError(None, "is not JSON") from None
    if not isinstance(data, dict):
        raise FieldError(None, f"is a JSON {json_type(data)}, not an object")
    if data.get("event") != STATUS_EVENT:
        raise FieldError("event", f"is {short_repr(data.get('event'))}, not {STATUS_EVENT!r}")
    return structure(_CONVERTER, data, Status)


def _status_converter() -> cattrs.Converter:
    conv = strict_converter()

    def strict_int(value: Any, _: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(None, f"must be a whole number, got {json_type(value)}")
        return value

    def strict_float(value: Any, _: type) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError(None, f"must be a number, got {json_type(value)}")
        return float(value)

    def counts(value: Any, _: type) -> dict[str, int]:
        if not isinstance(value, dict):
            raise FieldError(None, f"must be an object of counts, got {json_type(value)}")
        return {str(k): strict_int(v, int) for k, v in value.items()}

    conv.register_structure_hook(int, strict_int)
    conv.register_structure_hook(float, strict_float)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, int], counts)
    return conv


_CONVERTER: Final = _status_converter()
