"""The ``Broker``: one connection and one confirm-mode channel, owned by one thread."""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from qbit_consumer.broker.confirms import InFlight, Sent
from qbit_consumer.broker.copies import copy_properties
from qbit_consumer.broker.declaring import declaration_steps
from qbit_consumer.broker.messages import Delivery, Outgoing, delivery_from
from qbit_consumer.broker.params import AMQP_ERRORS, conflict_sentence, describe, parameters
from qbit_consumer.broker.topology import Topology
from qbit_consumer.errors import BrokerUnavailable, ShuttingDown, TopologyConflict
from qbit_consumer.redact import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How often an idle consumer wakes up to look at its stop flag.
CONSUME_TICK_SECONDS: Final = 0.5
#: Seconds to wait for confirm.select-ok right after connecting.
CONFIRM_SELECT_TIMEOUT: Final = 10


class Broker:
    """One connection and one confirm-mode channel, owned by the creating thread."""

    def __init__(self, url: str, *, role: str) -> None:
        self._url = url
        self._name = f"qbit-consumer {role} on {socket.gethostname()}"
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._publisher: pika.channel.Channel | None = None
        self._inflight = InFlight()
        self._settling = False
        #: Why the broker closed the channel (e.g. 404 no such exchange), for the error.
        self._closed_because: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection and a channel in confirm mode.

        :raises BrokerUnavailable: the broker cannot be reached or refused us.
        """
        try:
            self._connection = pika.BlockingConnection(parameters(self._url, self._name))
            self._channel = self._connection.channel()
            self._enable_confirms(self._connection, self._channel)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(
                f"cannot connect to {redact_url(self._url)}: {describe(exc)}"
            ) from exc

    def _enable_confirms(
        self, connection: pika.BlockingConnection, channel: BlockingChannel
    ) -> None:
        self._publisher = channel._impl  # private: see the module docstring
        self._closed_because = None
        self._inflight = InFlight()
        selected: list[bool] = []

        def on_select_ok(_frame: pika.frame.Method) -> None:
            selected.append(True)
            connection.call_later(0, _nothing)  # ends the process_data_events below

        self._publisher.add_on_return_callback(self._on_return)
        self._publisher.add_on_close_callback(self._on_channel_closed)
        self._publisher.confirm_delivery(ack_nack_callback=self._on_confirm, callback=on_select_ok)
        deadline = time.monotonic() + CONFIRM_SELECT_TIMEOUT
        while not selected:
            if time.monotonic() > deadline or not channel.is_open:
                raise BrokerUnavailable("the broker did not switch the channel to confirm mode")
            connection.process_data_events(time_limit=1.0)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        self._inflight.confirm(method.delivery_tag, multiple=bool(method.multiple), ok=ok)
        if self._settling and not self._inflight and self._connection is not None:
            self._connection.call_later(0, _nothing)  # ends settle's wait at once

    def _on_channel_closed(self, _channel: pika.channel.Channel, reason: BaseException) -> None:
        self._closed_because = reason

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Return,
        properties: pika.BasicProperties,
        _body: bytes,
    ) -> None:
        self._inflight.returned(method.exchange, method.routing_key, properties.message_id)

    @property
    def is_open(self) -> bool:
        return bool(self._connection and self._connection.is_open)

    def close(self) -> None:
        """Close quietly; unacked deliveries go back to their queue (the broker does that)."""
        connection, self._connection, self._channel = self._connection, None, None
        self._publisher = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except AMQP_ERRORS as exc:
                log.debug("closing the broker connection failed: %s", describe(exc))

    # -- topology --------------------------------------------------------------------------

    def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding of ``topology``; idempotent.

        :raises TopologyConflict: something exists with other arguments (nothing is changed).
        :raises BrokerUnavailable: the connection failed meanwhile.
        """
        channel = self._require_channel()
        for what, step in declaration_steps(channel, topology):
            try:
                step()
            except pika.exceptions.ChannelClosedByBroker as exc:
                self.close()
                raise TopologyConflict(conflict_sentence(what, exc)) from exc
            except AMQP_ERRORS as exc:
                self.close()
                raise BrokerUnavailable(f"declaring {what} failed: {describe(exc)}") from exc

    # -- consuming -------------------------------------------------------------------------

    def consume(self, queue: str, prefetch_count: int) -> Iterator[Delivery | None]:
        """Yield deliveries from ``queue``, and ``None`` every tick when there is nothing,
        so the caller can look at its stop flag. Acks are manual.

        :raises BrokerUnavailable: the connection failed.
        """
        channel = self._require_channel()
        try:
            channel.basic_qos(prefetch_count=prefetch_count)
            yield from self._deliveries(channel, queue)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"consuming from '{queue}' failed: {describe(exc)}") from exc
        finally:
            # Closing the generator (the caller stops) cancels the consumer: prefetched but
            # unhandled messages go back to the queue at once.
            if channel.is_open:
                try:
                    channel.cancel()
                except AMQP_ERRORS as exc:
                    log.debug("cancelling the consumer failed: %s", describe(exc))

    @staticmethod
    def _deliveries(channel: BlockingChannel, queue: str) -> Iterator[Delivery | None]:
        for method, properties, body in channel.consume(
            queue, auto_ack=False, inactivity_timeout=CONSUME_TICK_SECONDS
        ):
            if method is None:
                yield None
                continue
            yield delivery_from(method, properties, body)

    def put_back(self, delivery: Delivery) -> None:
        """Return an unacked message to its queue (a reject with requeue)."""
        try:
            self._require_channel().basic_reject(delivery.delivery_tag, requeue=True)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"returning a message failed: {describe(exc)}") from exc

    def waiting(self) -> int:
        """Deliveries already received that ``consume`` yields without waiting."""
        channel = self._channel
        return channel.get_waiting_message_count() if channel is not None and channel.is_open else 0

    def messages_in(self, queue: str) -> int | None:
        """How many messages ``queue`` holds; None when there is no such queue. Asked on a
        channel of its own, which the broker closes when the queue is missing.

        :raises BrokerUnavailable: the connection failed meanwhile.
        """
        connection = self._connection
        if connection is None or not connection.is_open:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            channel = connection.channel()
            try:
                return int(channel.queue_declare(queue, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                return None
            finally:
                if channel.is_open:
                    channel.close()
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(
                f"looking for the queue {queue!r} failed: {describe(exc)}"
            ) from exc

    def ack(self, delivery: Delivery, *, and_earlier: bool = False) -> None:
        """Ack ``delivery``; with ``and_earlier``, also every unacked delivery received before
        it on this channel (one frame for a whole batch)."""
        try:
            self._require_channel().basic_ack(delivery.delivery_tag, multiple=and_earlier)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"ack failed: {describe(exc)}") from exc

    # -- publishing ------------------------------------------------------------------------

    def send(self, exchange: str, routing_key: str, body: bytes, props: Outgoing) -> Sent:
        """Publish with ``mandatory`` without waiting; ``settle`` waits for the confirm."""
        properties = pika.BasicProperties(
            content_type=props.content_type,
            message_id=props.message_id,
            correlation_id=props.correlation_id,
            timestamp=props.timestamp,
            type=props.type,
            delivery_mode=pika.DeliveryMode.Persistent
            if props.persistent
            else pika.DeliveryMode.Transient,
            app_id="qbit-consumer",
        )
        return self._send(exchange, routing_key, body, properties)

    def resend(
        self,
        delivery: Delivery,
        routing_key: str,
        extra_headers: Mapping[str, Any],
        drop_headers: Callable[[str], bool] | None = None,
    ) -> Sent:
        """Copy a delivery into ``routing_key`` (through the default exchange, straight to that
        queue): the body unchanged, every property kept except those ``copy_properties`` moves
        into headers, plus ``extra_headers`` and minus the headers ``drop_headers`` picks.
        Does not wait: ``settle`` does."""
        return self._send(
            "", routing_key, delivery.body, copy_properties(delivery, extra_headers, drop_headers)
        )

    def _send(
        self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> Sent:
        self._require_channel()
        publisher = self._publisher
        assert publisher is not None
        try:
            publisher.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"publish to '{routing_key}' failed: {describe(exc)}") from exc
        return self._inflight.sent(exchange, routing_key, properties.message_id)

    def settle(self) -> None:
        """Wait until the broker has confirmed every message sent so far.

        Afterwards each ``Sent`` says whether it was routed. Waiting has no deadline of its
        own: a dead broker is noticed by the heartbeat, a blocked one by the blocked-connection
        timeout, and both end the wait with ``BrokerUnavailable``.
        A message the broker refused (a nack: a queue with ``reject-publish`` is full, or a
        queue process failed) is marked ``nacked``; the connection stays up and the caller
        decides what becomes of it.
        :raises BrokerUnavailable: the connection or channel was lost.
        """
        connection, channel = self._connection, self._channel
        if connection is None or channel is None:
            raise BrokerUnavailable("not connected")
        self._settling = True
        try:
            while self._inflight:
                if not channel.is_open:
                    raise self._closed_because or pika.exceptions.ChannelClosed(
                        0, "channel closed while publishing"
                    )
                connection.process_data_events(time_limit=1.0)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"publishing failed: {describe(exc)}") from exc
        finally:
            self._settling = False
        #: Why the broker closed the channel (e.g. 404 no such exchange), for the error.
        self._closed_because: BaseException | None = None

    # -- waiting without starving heartbeats -----------------------------------------------

    def wait_for(
        self, future: concurrent.futures.Future[T], stopping: Callable[[], bool] = lambda: False
    ) -> T:
        """The future's result, while keeping this connection's heartbeats and I/O going.

        The connection's thread must never sit in a long blocking call: pika's
        BlockingConnection only sends heartbeats inside its own calls.
        :raises ShuttingDown: ``stopping()`` became true first; the future is abandoned.
        """
        while True:
            try:
                return future.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if stopping():
                    raise ShuttingDown("stopping while waiting for qBittorrent") from None
                self.idle(0)

    def idle(self, seconds: float) -> None:
        """Service the connection for up to ``seconds``, returning early as soon as something
        happened on it (a frame arrived, a callback from ``call_soon_threadsafe`` ran), which
        pika's ``connection.sleep`` would not. Callers that wait for a condition loop on it;
        ``idle(0)`` reads what has arrived and returns at once."""
        connection = self._connection
        if connection is None:
            return
        try:
            connection.process_data_events(time_limit=seconds)
        except AMQP_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"connection lost: {describe(exc)}") from exc

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """The one method any thread may call: run ``callback`` on the connection's thread."""
        connection = self._connection
        if connection is None:
            raise BrokerUnavailable("not connected")
        try:
            connection.add_callback_threadsafe(callback)
        except AMQP_ERRORS as exc:
            raise BrokerUnavailable(f"connection closed: {describe(exc)}") from exc

    def _require_channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            raise BrokerUnavailable("not connected")
        return self._channel


def _nothing() -> None:
    """A callback whose only effect is to end a ``process_data_events`` wait early."""
