"""The messages the broker package hands out and takes in, as plain attrs classes: callers
never see pika's own types (``Delivery.properties`` is opaque to them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Delivery:
    """One message taken from a queue. ``properties`` is pika's object, opaque to callers:
    it is only handed back to ``republish`` so a copy keeps every property."""

    body: bytes
    #: Where it was published: a command's name is its routing key (``commands.table``).
    exchange: str
    routing_key: str
    delivery_tag: int
    redelivered: bool
    properties: Any
    headers: Mapping[str, Any]
    correlation_id: str | None
    message_id: str | None


@attrs.frozen(kw_only=True)
class Outgoing:
    """Properties of a message we create ourselves (events)."""

    message_id: str
    correlation_id: str | None
    timestamp: int
    persistent: bool
    type: str = "event"
    content_type: str = "application/json"


def delivery_from(method: Any, properties: Any, body: bytes) -> Delivery:
    return Delivery(
        body=body,
        exchange=str(getattr(method, "exchange", "")),
        routing_key=str(getattr(method, "routing_key", "")),
        delivery_tag=method.delivery_tag,
        redelivered=bool(getattr(method, "redelivered", False)),
        properties=properties,
        headers=dict(properties.headers or {}),
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
    )
