"""How an event goes on the wire, for both paths that publish one: the publisher thread (the
lifecycle and progress events of the tracking path) and the consumer thread (the ``received``,
``added`` and ``failed`` events of a command, published before its ack)."""

from __future__ import annotations

import logging
import time

from qbit_consumer.broker.confirms import Sent
from qbit_consumer.broker.connection import Broker
from qbit_consumer.broker.messages import Outgoing
from qbit_consumer.contract.events import Envelope

log = logging.getLogger(__name__)


def send_event(broker: Broker, exchange: str, event: Envelope) -> Sent:
    """Put ``event`` on the wire without waiting; ``broker.settle()`` waits for its confirm."""
    outgoing = Outgoing(
        message_id=event.event_id,
        correlation_id=event.request_id,
        timestamp=int(time.time()),
        persistent=event.persistent,
    )
    return broker.send(exchange, event.routing_key, event.body, outgoing)


def nobody_listening(event: Envelope, exchange: str) -> None:
    """The broker confirmed ``event`` but no queue was bound for it, even after the topology
    was declared again: it is gone, and the self-hoster should know why."""
    log.warning(
        "nobody is listening for %s: no queue is bound to exchange %r for it",
        event.routing_key,
        exchange,
        extra={"routing_key": event.routing_key, "hash": event.hash},
    )
