"""Retry and dead-letter copies of a delivery: what they keep, and what they must not."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.data

from qbit_consumer.broker.messages import Delivery


def copy_properties(
    delivery: Delivery,
    extra_headers: Mapping[str, Any],
    drop_headers: Callable[[str], bool] | None = None,
) -> pika.BasicProperties:
    """The properties of a retry or dead-letter copy of ``delivery``.

    A copy must always be publishable and must not vanish, so three things are not copied as
    they are (RabbitMQ's own dead-lettering does the same for ``expiration``):

    * ``user_id``: RabbitMQ refuses a publish whose user_id is not the connection's user, and
      closes the channel: a command from another user could never be dead-lettered.
    * ``expiration``: the copy would silently expire from the dead-letter queue.
    * the ``CC``/``BCC`` headers (sender-selected distribution): through the default exchange
      they name queues, so a copy would also land there, even back in the command queue.

    Each is kept in an ``x-original-*`` header instead. Copies are persistent whatever the
    original's ``delivery_mode`` (a transient original keeps it in ``x-original-delivery-mode``).
    A header value pika can read but not write back (a float, a decimal or integer out of its
    range, as other clients send them) is kept as its text: raising would make the copy, and
    so the command, impossible to settle.
    """
    original = delivery.properties
    headers = dict(original.headers or {})
    if drop_headers is not None:
        headers = {k: v for k, v in headers.items() if not drop_headers(k)}
    moved = {
        "x-original-user-id": original.user_id,
        "x-original-expiration": original.expiration,
        "x-original-cc": headers.pop("CC", None),
        "x-original-bcc": headers.pop("BCC", None),
    }
    if original.delivery_mode not in (None, pika.DeliveryMode.Persistent.value):
        moved["x-original-delivery-mode"] = original.delivery_mode
    headers.update({k: v for k, v in moved.items() if v is not None})
    headers.update(extra_headers)
    headers = {key: _writable(key, value) for key, value in headers.items()}
    return pika.BasicProperties(
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=original.message_id,
        timestamp=original.timestamp,
        type=original.type,
        app_id=original.app_id,
        cluster_id=original.cluster_id,
    )


def _writable(key: str, value: Any) -> Any:
    try:
        pika.data.encode_table([], {key: value})
    except Exception:  # pika's encoder raises several types (struct.error among them)
        return repr(value)
    return value
