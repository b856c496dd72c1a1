"""What only the operator commands need (``qbit-consumer send``, ``watch``, ``dlq``): reading a
queue without consuming it, listening on an exchange, and publishing one message at a time
with its confirm awaited. The service itself never does these; it streams confirms."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pika.exceptions

from qbit_consumer.broker.confirms import Sent
from qbit_consumer.broker.connection import CONSUME_TICK_SECONDS, Broker
from qbit_consumer.broker.messages import Delivery, Outgoing, delivery_from
from qbit_consumer.broker.params import AMQP_ERRORS, describe
from qbit_consumer.errors import BrokerUnavailable, QueueMissing


class OperatorBroker(Broker):
    """A ``Broker`` with the operator's verbs."""

    def publish(self, exchange: str, routing_key: str, body: bytes, props: Outgoing) -> bool:
        """Publish with ``mandatory`` and wait for the confirm; True once confirmed and routed.

        False means the broker confirmed the message but no queue was bound for it.
        :raises BrokerUnavailable: no confirm (connection lost), or the broker refused it.
        """
        sent = self.send(exchange, routing_key, body, props)
        self.settle()
        _raise_if_refused(sent)
        return sent.routed

    def republish(
        self,
        delivery: Delivery,
        routing_key: str,
        extra_headers: Mapping[str, Any],
        drop_headers: Callable[[str], bool] | None = None,
    ) -> bool:
        """``resend``, then wait for its confirm; True once confirmed and routed."""
        sent = self.resend(delivery, routing_key, extra_headers, drop_headers)
        self.settle()
        _raise_if_refused(sent)
        return sent.routed

    def get(self, queue: str) -> Delivery | None:
        """Take one message from ``queue`` without acking it (None when the queue is empty).

        :raises QueueMissing: there is no such queue.
        """
        channel = self._require_channel()
        try:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
        except AMQP_ERRORS as exc:
            self.close()
            if isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code == 404:
                raise QueueMissing(f"queue '{queue}' does not exist") from exc
            raise BrokerUnavailable(f"reading '{queue}' failed: {describe(exc)}") from exc
        if method is None:
            return None
        return delivery_from(method, properties, body)

    def listen(self, exchange: str, binding_keys: list[str]) -> Iterator[Delivery | None]:
        """Yield what arrives on ``exchange`` for ``binding_keys``, through a private queue that
        the broker deletes when we go (auto-acked: watching is not consuming work)."""
        channel = self._require_channel()
        try:
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            for key in binding_keys:
                channel.queue_bind(queue, exchange, routing_key=key)
            for method, properties, body in channel.consume(
                queue, auto_ack=True, inactivity_timeout=CONSUME_TICK_SECONDS
            ):
                yield None if method is None else delivery_from(method, properties, body)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"listening on '{exchange}' failed: {describe(exc)}") from exc


def _raise_if_refused(sent: Sent) -> None:
    if sent.nacked:
        raise BrokerUnavailable(f"the broker refused a message for '{sent.routing_key}' (nack)")
