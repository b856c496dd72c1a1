"""The consumer thread: takes commands from the command queue and hands them to the
``CommandHandler``, a batch at a time.

It owns its broker connection (pika's BlockingConnection is not thread-safe). qBittorrent calls
run on a helper thread (``QbitWorker``) while this thread keeps servicing the connection
(``Broker.wait_for``), so a slow qBittorrent never starves the heartbeats. The QbitClient lives
on that helper thread only.

Lifecycle: ``start()`` -> ``work()`` loops connect / declare / consume, reconnecting with backoff
when the broker goes away; ``stop()`` asks it to finish the command in hand and return (a
command still waiting for qBittorrent is abandoned unacked and comes back). While idle it
offers refused dead-letter copies again and declares its topology again now and then, so a
queue or binding deleted by hand comes back by itself. A ``TopologyConflict`` or an unexpected
exception ends the thread with ``failure`` set, which the service turns into a non-zero exit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from qbit_consumer.broker import Broker, Delivery
from qbit_consumer.broker.reconnect import Declarations, stay_connected
from qbit_consumer.broker.topology import build_topology
from qbit_consumer.commands.handling import CommandHandler
from qbit_consumer.commands.poison import PoisonGuard, marker_path
from qbit_consumer.commands.table import COMMANDS
from qbit_consumer.commands.tracked import Tracked
from qbit_consumer.config import Config
from qbit_consumer.counters import Counters
from qbit_consumer.errors import ShuttingDown
from qbit_consumer.model import Reachability
from qbit_consumer.qbit import LoginGate, QbitClient
from qbit_consumer.qbit.worker import QbitWorker
from qbit_consumer.redact import redact_url
from qbit_consumer.threads import CONSUMER, ServiceThread

log = logging.getLogger(__name__)


#: How long a burst may wait for the rest of the prefetch window to arrive (see ``_batch``).
BATCH_LINGER_SECONDS: Final = 0.002
#: The command queue's default name up to 0.1.0 (see ``_mention_the_old_queue``).
OLD_DEFAULT_QUEUE: Final = "downloads.add"


class ConsumerThread(ServiceThread):
    def __init__(
        self,
        cfg: Config,
        gate: LoginGate,
        *,
        tracked: Tracked,
        qbit: Reachability,
        blocked: Callable[[], str | None],
        counters: Counters,
    ) -> None:
        """``tracked`` is where a batch's changes are recorded, before its acks; ``qbit`` is whether
        the poller finds qBittorrent answering; ``blocked()`` says why else commands must wait
        in their queue now (None: take them); ``counters`` counts what became of them."""
        super().__init__(CONSUMER)
        self._cfg = cfg
        self._qbit_status = qbit
        self._blocked = blocked
        self._tracked = tracked
        self._counters = counters
        self.connected = threading.Event()
        self._qbit = QbitWorker(lambda: QbitClient(cfg.qbittorrent, gate))
        self._guard = PoisonGuard(marker_path(cfg.state.path))
        self._topology = build_topology(cfg, tuple(COMMANDS))
        self._last_batch = 0  # size of the previous batch: a full one means a burst
        self._next: Delivery | None = None  # taken from the broker, not handled yet
        self._said_old_queue = False

    def work(self) -> None:
        stay_connected(
            self._cfg.rabbitmq.url,
            CONSUMER,
            self._topology,
            self._consume,
            stopped=self._stopping.is_set,
            pause=self._pause,
            while_away="reconnecting until it is back",
            on_close=self._disconnected,
        )

    def finish(self) -> None:
        self._qbit.close()

    def _pause(self, seconds: float) -> None:
        self.beat()
        self._stopping.wait(seconds)

    def _disconnected(self) -> None:
        self.connected.clear()
        self._next = None  # the broker gives it back with everything else unacked

    def _mention_the_old_queue(self, broker: Broker) -> None:
        """Up to 0.1.0 the command queue was ``downloads.add`` by default. A deployment that
        upgraded without naming it in the config would leave commands waiting there unseen,
        so its existence is said, once a run (CHANGELOG.md says what to do)."""
        queue = self._cfg.rabbitmq.command_queue
        if queue == OLD_DEFAULT_QUEUE or self._said_old_queue:
            return
        waiting = broker.messages_in(OLD_DEFAULT_QUEUE)
        if waiting is not None:
            self._said_old_queue = True
            log.warning(
                "a queue %r exists (the command queue's default name up to 0.1.0) with %d "
                "messages, and this service consumes %r: set [rabbitmq] command_queue = %s to "
                "keep it, or move its messages (CHANGELOG.md)",
                OLD_DEFAULT_QUEUE,
                waiting,
                queue,
                OLD_DEFAULT_QUEUE,
            )

    def _consume(self, broker: Broker) -> None:
        handler = CommandHandler(
            self._cfg,
            broker,
            self._qbit.submit,
            declarations=Declarations(broker, self._topology),
            guard=self._guard,
            stopping=self._stopping.is_set,
            tracked=self._tracked,
            counters=self._counters,
        )
        self.connected.set()
        self._mention_the_old_queue(broker)
        try:
            while not self._stopping.is_set():
                if self._why_waiting() is not None:
                    self._wait_until_ready(broker, handler)
                    continue
                log.info(
                    "consuming commands from %r on %s",
                    self._cfg.rabbitmq.command_queue,
                    redact_url(self._cfg.rabbitmq.url),
                )
                deliveries = broker.consume(
                    self._cfg.rabbitmq.command_queue, self._cfg.rabbitmq.prefetch_count
                )
                with contextlib.closing(deliveries):  # closing it cancels the consumer
                    stream = self._with_stashed(deliveries)
                    for delivery in stream:
                        self.beat()
                        if self._stopping.is_set() or self._why_waiting() is not None:
                            # Taken, but no longer takeable: back to the queue, in order.
                            for left in (delivery, self._next):
                                if left is not None:
                                    broker.put_back(left)
                            self._next = None
                            break
                        if delivery is not None:
                            handler.handle_batch(self._batch(broker, delivery, stream))
                        handler.tend()
        except ShuttingDown:
            log.info("stopping: the command in hand goes back to the queue, unacked")

    def _with_stashed(self, deliveries: Iterator[Delivery | None]) -> Iterator[Delivery | None]:
        """``deliveries``, with the one ``_batch`` set aside handed out right after the batch."""
        for delivery in deliveries:
            yield delivery
            while self._next is not None:
                stashed, self._next = self._next, None
                yield stashed

    def _batch(
        self, broker: Broker, first: Delivery, deliveries: Iterator[Delivery | None]
    ) -> list[Delivery]:
        """The commands to hand to qBittorrent together with ``first``: one lookup and one add
        call instead of one each.

        A lone command goes at once. In a burst (others came with it, or the previous batch
        filled the whole prefetch window) the broker is still streaming the rest of the window:
        it refills the window only once the previous batch was acked. Waiting up to
        ``BATCH_LINGER_SECONDS`` for those fills the batch, where taking only what has arrived
        would halve it.

        A redelivered command always goes alone (``poison``): it may be the one that made the
        process die, and must not take innocent commands down with it, nor be hidden among them.
        """
        batch = [first]
        if first.redelivered:
            return batch
        limit = self._cfg.rabbitmq.prefetch_count
        broker.idle(0)  # read what has arrived on the socket meanwhile
        deadline = time.monotonic() + BATCH_LINGER_SECONDS
        while len(batch) < limit:
            if broker.waiting():
                more = next(deliveries)
                if more is None:
                    break
                if more.redelivered:
                    self._next = more
                    break
                batch.append(more)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (len(batch) == 1 and self._last_batch < limit):
                break
            broker.idle(remaining)  # returns as soon as a delivery arrives
        self._last_batch = len(batch)
        return batch

    def _why_waiting(self) -> str | None:
        """Why commands must wait in their queue now; None when they may be taken. A command
        taken while qBittorrent does not answer, or while the state file cannot be written,
        could only fail or go unrecorded."""
        if not self._qbit_status.up:
            return "qBittorrent does not answer" if self._qbit_status.known.is_set() else ""
        return self._blocked()

    def _wait_until_ready(self, broker: Broker, handler: CommandHandler) -> None:
        warned: str | None = None
        while not self._stopping.is_set() and (reason := self._why_waiting()) is not None:
            if reason and reason != warned:
                log.warning("%s: not taking commands until it is resolved", reason)
                warned = reason
            self.beat()
            handler.tend()
            broker.idle(0.5)  # keeps the connection's heartbeats going
        if warned and not self._stopping.is_set():
            log.info("taking commands again")
