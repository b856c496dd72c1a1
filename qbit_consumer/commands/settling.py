"""What becomes of a batch's messages on the broker, once each command has its outcome.

The handler decides (``handling``); this sends and confirms. Everything a batch publishes goes
out without waiting, then one ``settle`` waits for all of its confirms: first the commands'
own events (``received``, ``added``) and their retry or dead-letter copies, then the ``failed``
events of the copies the dead-letter queue took, because a ``failed`` event must never go out
for a copy the dead-letter queue did not take. Then the acks: one for the whole batch when it
can, one each otherwise.

A copy the broker refuses (a nack: a dead-letter or retry queue with a ``reject-publish``
length limit, or a failing queue) is neither acked nor dropped: its command is held, unacked,
and its copy is offered again with a growing pause, while the other commands go on.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import attrs

from qbit_consumer.broker import Broker, Delivery, Sent
from qbit_consumer.broker.publishing import nobody_listening, send_event
from qbit_consumer.broker.reconnect import Declarations, Refusals
from qbit_consumer.commands.outcomes import Copy, Done
from qbit_consumer.commands.table import CommandKind
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Envelope, Event
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.contract.status import DEAD_LETTERED, RETRIED
from qbit_consumer.counters import Counters

log = logging.getLogger(__name__)

#: Pauses between offers of a refused copy: from 1 s up to this many seconds.
REFUSED_BACKOFF_CAP_SECONDS: Final = 60.0


@attrs.define(eq=False)  # compared by identity: two equal commands are still two messages
class Taken:
    """One delivery of a batch and what is known of it."""

    delivery: Delivery
    attempt: int
    context: CommandContext
    name: str | None = None  # the command's routing key
    kind: CommandKind[Any] | None = None
    command: Any = None  # what ``kind.parse`` made of the body
    copy: Copy | None = None
    sent: Sent | None = None  # the copy's
    done: Done | None = None
    events: list[Sent] = attrs.Factory(list)  # what it published, confirmed at the next settle

    @property
    def refused(self) -> bool:
        """Whether the broker nacked one of its events (a queue bound to the event exchange
        is full and rejects publishes): its outcome is not safe."""
        return any(sent.nacked for sent in self.events)


class Settler:
    """The broker side of a batch, on the consumer thread: events, copies, confirms, holds
    and acks."""

    def __init__(
        self, cfg: Config, broker: Broker, declarations: Declarations, counters: Counters
    ) -> None:
        self._cfg = cfg
        self._counters = counters
        self._broker = broker
        self._declarations = declarations
        # What the batch in hand has published, and for which command.
        self._events: list[tuple[Envelope, Sent, Taken]] = []
        # Commands whose copy the broker refused: unacked, offered again after a pause.
        self._held: list[Taken] = []
        self._refusals = Refusals(cap=REFUSED_BACKOFF_CAP_SECONDS)

    def due_again(self) -> list[Taken]:
        """The held commands whose pause is over, taken off hold to be offered again."""
        if not self._held or self._refusals.remaining() > 0:
            return []
        held, self._held = self._held, []
        self._events = []
        return held

    def is_held(self, item: Taken) -> bool:
        return item in self._held

    def send(self, event: Event | Envelope, item: Taken) -> None:
        envelope = event if isinstance(event, Envelope) else event.envelope()
        sent = send_event(self._broker, self._cfg.rabbitmq.event_exchange, envelope)
        self._events.append((envelope, sent, item))
        item.events.append(sent)

    def finish(self, items: list[Taken]) -> None:
        """Send the copies, wait for every confirm, then the ``failed`` events of the copies
        the dead-letter queue took. Refused copies put their command on hold."""
        copies = [item for item in items if item.copy is not None]
        for item in copies:
            assert item.copy is not None
            item.sent = self._broker.resend(item.delivery, item.copy.queue, item.copy.headers)
        self._broker.settle()
        if any(not item.sent.routed for item in copies if item.sent is not None):
            # A queue of ours is gone (deleted by hand?): declare it again, offer at once.
            log.warning("a retry or dead-letter queue is missing; declaring the topology again")
            self._declarations.declare()
        refused = [item for item in copies if item.sent and not _safe(item.sent)]
        taken = [item for item in copies if item not in refused]
        for item in taken:
            assert item.copy is not None
            log.warning(item.copy.log_line, extra=log_fields(item))
            if item.copy.failed is not None:
                self.send(item.copy.failed, item)
        self._broker.settle()
        self._reroute_events()
        self._hold(refused, any(item.sent and item.sent.nacked for item in refused))

    def ack(self, done: list[Taken], *, whole_batch: bool = True) -> None:
        """Deliveries are taken in order, so when nothing is held and the whole batch is done
        it is exactly what is unacked up to its last delivery: one ack for all. Otherwise one
        ack each. Then each counts for the status message: settled for good."""
        if not done:
            return
        if whole_batch and not self._held:
            self._broker.ack(done[-1].delivery, and_earlier=True)
        else:
            for item in done:
                self._broker.ack(item.delivery)
        self._counters.commands(self._outcome(item) for item in done)
        self._counters.events(
            sent.routing_key for item in done for sent in item.events if sent.accepted
        )

    def _outcome(self, item: Taken) -> str:
        if item.copy is not None:
            dead = item.copy.queue == self._cfg.rabbitmq.dead_letter_queue
            return DEAD_LETTERED if dead else RETRIED
        assert item.done is not None, "an acked command was carried out or copied"
        return item.done.outcome

    def _hold(self, refused: list[Taken], nacked: bool) -> None:
        """Refused copies keep their commands unacked. A nack starts (or lengthens) a pause;
        a copy that found no queue is offered again at once, its queue declared again."""
        if not refused:
            if not self._held and self._refusals.accepted():
                log.warning("the retry and dead-letter queues take messages again")
            return
        self._held.extend(refused)
        if nacked and self._refusals.refused():
            log.error(
                "RabbitMQ refuses copies for the retry or dead-letter queue (a length limit "
                "with reject-publish, or a resource alarm?): %d command(s) stay unacked and "
                "are offered again with a growing pause; other commands go on",
                len(refused),
            )

    def _reroute_events(self) -> None:
        """Events no queue took: the event exchange may have been deleted and declared again
        without its bindings (the platform's). Declare ours again and send them once more;
        what is still unroutable then has nobody listening."""
        unrouted = [(event, item) for event, sent, item in self._events if not sent.routed]
        self._events = []
        if unrouted and self._declarations.reroute():
            for event, item in unrouted:
                self.send(event, item)
            self._broker.settle()
            unrouted = [(event, item) for event, sent, item in self._events if not sent.routed]
            self._events = []
        for event, _item in unrouted:
            nobody_listening(event, self._cfg.rabbitmq.event_exchange)


def _safe(sent: Sent) -> bool:
    return sent.accepted and sent.routed


def log_fields(item: Taken) -> dict[str, Any]:
    fields: dict[str, Any] = {"attempt": item.attempt, "request_id": item.context.request_id}
    if item.context.hash is not None:
        fields["hash"] = item.context.hash
    if item.copy is not None and item.copy.failed is not None:
        fields["reason"] = item.copy.failed.reason
    return fields
