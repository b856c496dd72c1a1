"""The publisher thread: empties the publish queue (``outbox``) under publisher confirms.

It owns its own broker connection. It is not the consumer's connection because the consumer
thread can be busy with one command for seconds (a slow qBittorrent), and events should not
wait for that; RabbitMQ also advises separate connections for publishing and consuming, so flow
control on one does not stall the other. Producers wake it through ``add_callback_threadsafe``,
the one cross-thread call pika allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from qbit_consumer.broker import Broker, Sent
from qbit_consumer.broker.publishing import nobody_listening, send_event
from qbit_consumer.broker.reconnect import Declarations, Refusals, stay_connected
from qbit_consumer.broker.topology import build_event_topology
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Envelope
from qbit_consumer.contract.status import STATUS_EVENT
from qbit_consumer.counters import Counters
from qbit_consumer.errors import BrokerUnavailable
from qbit_consumer.threads import PUBLISHER, ServiceThread
from qbit_consumer.tracking.outbox import PublishQueue

log = logging.getLogger(__name__)

#: Events sent before waiting for their confirms. Large enough that a cycle's progress events
#: cost a few round trips, small enough that a lost connection repeats little.
BATCH_SIZE = 500


class PublisherThread(ServiceThread):
    """Publishes the queue under confirms; marks stored events done after each confirm.

    ``stop()`` makes it publish what is queued for up to ``flush_seconds``, then return;
    stored events it could not publish stay in the outbox for the next start.
    """

    def __init__(
        self,
        cfg: Config,
        queue: PublishQueue,
        on_published: Callable[[int], None],
        counters: Counters,
    ) -> None:
        """``on_published(seq)``: a stored (lifecycle) event was confirmed; ``counters``
        counts every confirmed event by name, for the status message."""
        super().__init__(PUBLISHER)
        self._cfg = cfg
        self._queue = queue
        self._on_published = on_published
        self._counters = counters
        self._flush_deadline = float("inf")
        self.connected = threading.Event()
        self._refusals = Refusals()
        # Only what events need: the consumer declares the rest, and events flow without it.
        self._topology = build_event_topology(cfg)

    def stop(self, flush_seconds: float = 3.0) -> None:
        self._flush_deadline = time.monotonic() + flush_seconds
        super().stop()
        self._queue.wake()

    def work(self) -> None:
        stay_connected(
            self._cfg.rabbitmq.url,
            PUBLISHER,
            self._topology,
            self._serve,
            stopped=self._done,
            pause=self._sleep,
            while_away="events wait in memory and the outbox",
            on_close=self._disconnected,
        )

    def _serve(self, broker: Broker) -> None:
        self._queue.set_waker(lambda: broker.call_soon_threadsafe(_nothing))
        self.connected.set()
        self._publish_until_done(broker, Declarations(broker, self._topology))

    def _disconnected(self) -> None:
        self.connected.clear()
        self._queue.set_waker(None)

    def _publish_until_done(self, broker: Broker, declarations: Declarations) -> None:
        while not self._done():
            self.beat()
            declarations.tend()
            if (pause := self._refusals.remaining()) > 0:
                broker.idle(min(1.0, pause))
                continue
            batch = self._queue.take(BATCH_SIZE)
            if not batch:
                if self.stopping:
                    return
                broker.idle(1.0)  # returns early when a producer wakes us
                continue
            self._publish_batch(broker, declarations, batch)

    def _publish_batch(
        self, broker: Broker, declarations: Declarations, batch: list[Envelope]
    ) -> None:
        """Send the whole batch, then wait once for all its confirms (streaming confirms)."""
        exchange = self._cfg.rabbitmq.event_exchange
        sent: list[tuple[Envelope, Sent]] = []
        try:
            sent = [(event, send_event(broker, exchange, event)) for event in batch]
            broker.settle()
            unrouted = [event for event, s in sent if not s.routed and event.seq is not None]
            # The exchange may have been deleted and declared again without its bindings:
            # declare them again, and send these once more.
            if unrouted and declarations.reroute():
                again = {id(event): send_event(broker, exchange, event) for event in unrouted}
                broker.settle()
                sent = [(event, again.get(id(event), s)) for event, s in sent]
        except BrokerUnavailable:
            # What the broker confirmed before it went is done; the rest goes out again after
            # the reconnect (at least once: consumers dedupe on event_id).
            confirmed = [(event, s) for event, s in sent if s.accepted]
            self._done_with(confirmed, exchange)
            done = {id(event) for event, _ in confirmed}
            self._queue.put_back([event for event in batch if id(event) not in done])
            raise
        refused = [event for event, s in sent if s.nacked]
        self._done_with([(event, s) for event, s in sent if not s.nacked], exchange)
        self._on_refused(refused)

    def _on_refused(self, refused: list[Envelope]) -> None:
        """Events the broker refused (a queue bound to the event exchange is full and rejects
        publishes, or failed) wait at the head of the queue; offering them again at once
        would only be refused again, so the pause grows, and the outage is logged once."""
        if not refused:
            if self._refusals.accepted():
                log.warning("RabbitMQ takes events again")
            return
        if self._refusals.refused():
            log.error(
                "RabbitMQ refuses events (a queue bound to %r is full and rejects publishes?): "
                "they wait in memory and the outbox, offered again with a growing pause",
                self._cfg.rabbitmq.event_exchange,
            )
        self._queue.put_back(refused)

    def _done_with(self, published: list[tuple[Envelope, Sent]], exchange: str) -> None:
        """Lifecycle events the broker confirmed leave the outbox; an unrouted progress event
        is not worth a warning (the next cycle brings another). The status message does not
        count itself."""
        self._counters.events(
            event.routing_key for event, _ in published if event.routing_key != STATUS_EVENT
        )
        for event, sent in published:
            if event.seq is None:
                continue
            if not sent.routed:
                nobody_listening(event, exchange)
            self._on_published(event.seq)

    def _done(self) -> bool:
        if not self.stopping:
            return False
        return len(self._queue) == 0 or time.monotonic() >= self._flush_deadline

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._done() and time.monotonic() < end:
            self.beat()
            time.sleep(min(0.1, end - time.monotonic()))
            if self.stopping:
                return


def _nothing() -> None:
    """Runs on the publisher's thread; its only effect is to end the publisher's wait."""
