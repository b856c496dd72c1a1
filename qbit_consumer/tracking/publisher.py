"""The publish queue and the publisher thread that empties it.

Lifecycle events (already safe in the state file's outbox) and progress events wait here for
the broker. The queue keeps the order of events per download and never drops a lifecycle
event; a progress event replaces the previous one of the same download while that one is still
waiting, so a slow or absent broker costs at most one progress event per download in memory.

The publisher thread owns its own broker connection. It is not the consumer's connection
because the consumer thread can be busy with one command for seconds (a slow qBittorrent),
and events should not wait for that; RabbitMQ also advises separate connections for
publishing and consuming, so flow control on one does not stall the other. Producers wake it
through ``add_callback_threadsafe``, the one cross-thread call pika allows.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable

import attrs

from qbit_consumer.broker import Broker, Outgoing
from qbit_consumer.broker.confirms import Sent
from qbit_consumer.broker.reconnect import Declarations, Refusals, stay_connected
from qbit_consumer.broker.topology import build_event_topology
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Event
from qbit_consumer.errors import BrokerUnavailable, TopologyConflict
from qbit_consumer.tracking.state import StoredEvent

log = logging.getLogger(__name__)

#: Events sent before waiting for their confirms. Large enough that a cycle's progress events
#: cost a few round trips, small enough that a lost connection repeats little.
BATCH_SIZE = 500


@attrs.define
class Item:
    """One message to publish: a stored lifecycle event (``seq`` set) or a progress event."""

    routing_key: str
    body: bytes
    event_id: str
    hash: str | None
    request_id: str | None
    persistent: bool
    seq: int | None = None

    @classmethod
    def stored(cls, event: StoredEvent) -> Item:
        return cls(
            event.routing_key,
            event.body,
            event.event_id,
            event.hash,
            event.request_id,
            event.persistent,
            event.seq,
        )

    @classmethod
    def progress(cls, event: Event) -> Item:
        return cls(
            event.routing_key,
            event.to_json(),
            event.event_id,
            event.hash,
            event.request_id,
            event.persistent,
        )


class PublishQueue:
    """Thread-safe; any thread may put, the publisher thread takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: collections.deque[Item] = collections.deque()
        # The progress item of each download that is still waiting and has no lifecycle event
        # queued behind it: a newer progress event may replace it in place.
        self._open_progress: dict[str, Item] = {}
        self._waker: Callable[[], None] | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        with self._lock:
            self._waker = waker

    def put_lifecycle(self, items: list[Item]) -> None:
        with self._lock:
            for item in items:
                if item.hash is not None:
                    self._open_progress.pop(item.hash, None)
                self._items.append(item)
        self.wake()

    def put_progress(self, items: list[Item]) -> None:
        with self._lock:
            for item in items:
                assert item.hash is not None
                waiting = self._open_progress.get(item.hash)
                if waiting is not None:
                    waiting.body, waiting.event_id = item.body, item.event_id
                else:
                    self._open_progress[item.hash] = item
                    self._items.append(item)
        self.wake()

    def take(self, limit: int = 1) -> list[Item]:
        """Up to ``limit`` items from the head, oldest first."""
        with self._lock:
            taken: list[Item] = []
            while self._items and len(taken) < limit:
                item = self._items.popleft()
                if item.hash is not None and self._open_progress.get(item.hash) is item:
                    del self._open_progress[item.hash]
                taken.append(item)
            return taken

    def put_back(self, items: list[Item]) -> None:
        """Return items that could not be published to the head of the queue, in order."""
        with self._lock:
            self._items.extendleft(reversed(items))

    def wake(self) -> None:
        waker = self._waker
        if waker is not None:
            # Failing means the publisher is reconnecting; it looks at the queue when it is back.
            with contextlib.suppress(BrokerUnavailable):
                waker()


class PublisherThread(threading.Thread):
    """Publishes the queue under confirms; marks stored events done after each confirm.

    ``stop()`` makes it publish what is queued for up to ``flush_seconds``, then return;
    stored events it could not publish stay in the outbox for the next start.
    """

    def __init__(
        self, cfg: Config, queue: PublishQueue, on_published: Callable[[int], None]
    ) -> None:
        super().__init__(name="publisher", daemon=True)
        self._cfg = cfg
        self._queue = queue
        self._on_published = on_published
        self._stopping = threading.Event()
        self._flush_deadline = float("inf")
        self.failure: BaseException | None = None
        self.connected = threading.Event()
        self.last_beat = time.time()
        self._refusals = Refusals()
        # Only what events need: the consumer declares the rest, and events flow without it.
        self._topology = build_event_topology(cfg.rabbitmq)

    def stop(self, flush_seconds: float = 3.0) -> None:
        self._flush_deadline = time.monotonic() + flush_seconds
        self._stopping.set()
        self._queue.wake()

    def run(self) -> None:
        try:
            stay_connected(
                self._cfg.rabbitmq.url,
                "publisher",
                self._topology,
                self._serve,
                stopped=self._done,
                pause=self._sleep,
                while_away="events wait in memory and the outbox",
                on_close=self._disconnected,
            )
        except TopologyConflict as exc:
            log.critical("cannot publish: %s", exc)
            self.failure = exc
        except BaseException as exc:
            log.critical("the publisher thread crashed", exc_info=True)
            self.failure = exc

    def _serve(self, broker: Broker) -> None:
        self._queue.set_waker(lambda: broker.call_soon_threadsafe(_nothing))
        self.connected.set()
        self._publish_until_done(broker, Declarations(broker, self._topology))

    def _disconnected(self) -> None:
        self.connected.clear()
        self._queue.set_waker(None)

    def _publish_until_done(self, broker: Broker, declarations: Declarations) -> None:
        while not self._done():
            self.last_beat = time.time()
            declarations.tend()
            if (pause := self._refusals.remaining()) > 0:
                broker.idle(min(1.0, pause))
                continue
            batch = self._queue.take(BATCH_SIZE)
            if not batch:
                if self._stopping.is_set():
                    return
                broker.idle(1.0)  # returns early when a producer wakes us
                continue
            self._publish_batch(broker, declarations, batch)

    def _publish_batch(self, broker: Broker, declarations: Declarations, batch: list[Item]) -> None:
        """Send the whole batch, then wait once for all its confirms (streaming confirms)."""
        exchange = self._cfg.rabbitmq.event_exchange
        sent: list[tuple[Item, Sent]] = []
        try:
            sent = [(item, self._send(broker, exchange, item)) for item in batch]
            broker.settle()
            unrouted = [item for item, s in sent if not s.routed and item.seq is not None]
            # The exchange may have been deleted and declared again without its bindings:
            # declare them again, and send these once more.
            if unrouted and declarations.reroute():
                again = {id(item): self._send(broker, exchange, item) for item in unrouted}
                broker.settle()
                sent = [(item, again.get(id(item), s)) for item, s in sent]
        except BrokerUnavailable:
            # What the broker confirmed before it went is done; the rest goes out again after
            # the reconnect (at least once: consumers dedupe on event_id).
            confirmed = [(item, s) for item, s in sent if s.confirmed and not s.nacked]
            self._done_with(confirmed, exchange)
            done = {id(item) for item, _ in confirmed}
            self._queue.put_back([item for item in batch if id(item) not in done])
            raise
        refused = [item for item, s in sent if s.nacked]
        self._done_with([(item, s) for item, s in sent if not s.nacked], exchange)
        self._on_refused(refused)

    def _on_refused(self, refused: list[Item]) -> None:
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

    @staticmethod
    def _send(broker: Broker, exchange: str, item: Item) -> Sent:
        outgoing = Outgoing(
            message_id=item.event_id,
            correlation_id=item.request_id,
            timestamp=int(time.time()),
            persistent=item.persistent,
        )
        return broker.send(exchange, item.routing_key, item.body, outgoing)

    def _done_with(self, published: list[tuple[Item, Sent]], exchange: str) -> None:
        for item, sent in published:
            if not sent.routed and item.seq is not None:
                log.warning(
                    "nobody is listening for %s: no queue is bound to exchange %r for it",
                    item.routing_key,
                    exchange,
                    extra={"routing_key": item.routing_key, "hash": item.hash},
                )
            if item.seq is not None:
                self._on_published(item.seq)

    def _done(self) -> bool:
        if not self._stopping.is_set():
            return False
        return len(self._queue) == 0 or time.monotonic() >= self._flush_deadline

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._done() and time.monotonic() < end:
            self.last_beat = time.time()
            time.sleep(min(0.1, end - time.monotonic()))
            if self._stopping.is_set():
                return


def _nothing() -> None:
    """Runs on the publisher's thread; its only effect is to end the publisher's wait."""
