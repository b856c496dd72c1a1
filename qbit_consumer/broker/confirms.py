"""Bookkeeping of publisher confirms with many messages in flight.

Publish-and-wait (one confirm round trip per message) is what pika's BlockingChannel does in
confirm mode, and RabbitMQ's publisher guide calls it an anti-pattern for throughput. Instead we
publish a batch, then wait once until the broker has confirmed all of it. This module is the
pure part of that: which delivery tag is which message, what the broker said about each, and
which ones were returned as unroutable. ``broker`` feeds it the broker's frames.

Facts it relies on (RabbitMQ's confirms guide): after ``confirm.select`` the channel numbers
published messages 1, 2, 3...; an ack or nack may cover every tag up to its own (``multiple``);
confirms may come in any order; and a ``basic.return`` for a mandatory message comes before
that message's ack. A return carries no delivery tag, so it is matched to the oldest waiting
message with the same exchange, routing key and message id.
"""

from __future__ import annotations

import collections

import attrs


@attrs.define(eq=False)
class Sent:
    """One published message. ``routed`` and ``nacked`` are final once ``confirmed`` is True."""

    tag: int
    exchange: str
    routing_key: str
    message_id: str | None
    confirmed: bool = False
    routed: bool = True
    nacked: bool = False

    @property
    def accepted(self) -> bool:
        """The broker confirmed it and did not refuse it: it is safe with the broker."""
        return self.confirmed and not self.nacked


class InFlight:
    """The messages of one channel that the broker has not confirmed yet."""

    def __init__(self) -> None:
        self._next_tag = 1
        self._waiting: collections.OrderedDict[int, Sent] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def sent(self, exchange: str, routing_key: str, message_id: str | None) -> Sent:
        """Record a message just handed to the channel; its tag is the channel's next one."""
        message = Sent(self._next_tag, exchange, routing_key, message_id)
        self._next_tag += 1
        self._waiting[message.tag] = message
        return message

    def confirm(self, tag: int, *, multiple: bool, ok: bool) -> None:
        """The broker acked (``ok``) or nacked ``tag``, and every earlier tag if ``multiple``."""
        if multiple:
            while self._waiting:
                first = next(iter(self._waiting))
                if first > tag:
                    break
                self._settle(self._waiting.popitem(last=False)[1], ok)
        else:
            message = self._waiting.pop(tag, None)
            if message is not None:
                self._settle(message, ok)

    def returned(self, exchange: str, routing_key: str, message_id: str | None) -> None:
        """The broker returned a mandatory message: no queue was bound for it."""
        for message in self._waiting.values():
            if (
                message.routed
                and message.exchange == exchange
                and message.routing_key == routing_key
                and message.message_id == message_id
            ):
                message.routed = False
                return

    @staticmethod
    def _settle(message: Sent, ok: bool) -> None:
        message.confirmed = True
        message.nacked = not ok
