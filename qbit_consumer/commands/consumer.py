"""The consumer thread: takes `downloads.add` commands and carries them out, a batch at a time.

It owns its broker connection (pika's BlockingConnection is not thread-safe). qBittorrent calls
run on a helper thread (``QbitWorker``) while this thread keeps servicing the connection
(``Broker.wait_for``), so a slow qBittorrent never starves the heartbeats. The QbitClient lives
on that helper thread only.

Lifecycle: ``start()`` -> ``run()`` loops connect / declare / consume, reconnecting with backoff
when the broker goes away; ``stop()`` asks it to finish the command in hand and return (a
command still waiting for qBittorrent is abandoned unacked and comes back). While idle it
offers refused dead-letter copies again and declares its topology again now and then, so a
queue or binding deleted by hand comes back by itself. A ``TopologyConflict`` or an unexpected
exception ends the thread with ``failure`` set, which the service turns into a non-zero exit.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Final, TypeVar

from qbit_consumer.broker import Broker, Delivery
from qbit_consumer.broker.reconnect import Declarations, stay_connected
from qbit_consumer.broker.topology import build_topology
from qbit_consumer.commands.add import AddResult
from qbit_consumer.commands.handling import CommandHandler
from qbit_consumer.commands.poison import PoisonGuard, marker_path
from qbit_consumer.config import Config
from qbit_consumer.contract.messages import AddCommand
from qbit_consumer.errors import ShuttingDown, TopologyConflict
from qbit_consumer.qbit.client import QbitClient, Reachability
from qbit_consumer.qbit.login import LoginGate
from qbit_consumer.redact import redact_url

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a burst may wait for the rest of the prefetch window to arrive (see ``_batch``).
BATCH_LINGER_SECONDS: Final = 0.002


class QbitWorker:
    """One daemon thread that alone owns a QbitClient and runs the work handed to it.

    Not a ThreadPoolExecutor: the interpreter joins an executor's threads at exit, so a call
    hanging on a frozen qBittorrent would hold the process long past SIGTERM. A daemon thread
    is simply abandoned; the command it worked for was not acked and comes back.
    """

    def __init__(self, make_client: Callable[[], QbitClient]) -> None:
        self._make_client = make_client
        self._jobs: queue.SimpleQueue[tuple[Future[object], Callable[[QbitClient], object]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first command

    def submit(self, work: Callable[[QbitClient], T]) -> Future[T]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="consumer-qbit", daemon=True)
            self._thread.start()
        future: Future[T] = Future()
        self._jobs.put((future, work))  # type: ignore[arg-type]
        return future

    def close(self) -> None:
        """Log out once the work in hand is done; does not wait for it."""
        if self._thread is not None:
            self._jobs.put(None)

    def _run(self) -> None:
        client: QbitClient | None = None
        while (job := self._jobs.get()) is not None:
            future, work = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if client is None:
                    client = self._make_client()
                future.set_result(work(client))
            except BaseException as exc:  # handed to the waiting thread, which decides
                future.set_exception(exc)
        if client is not None:
            client.close()


class ConsumerThread(threading.Thread):
    def __init__(
        self,
        cfg: Config,
        gate: LoginGate,
        *,
        on_added: Callable[[list[tuple[AddCommand, AddResult]]], None],
        qbit: Reachability,
        blocked: Callable[[], str | None],
    ) -> None:
        """``on_added`` records what a batch added before its acks; ``qbit`` is whether the
        poller finds qBittorrent answering; ``blocked()`` says why else commands must wait in
        their queue now (None: take them)."""
        super().__init__(name="consumer", daemon=True)
        self._cfg = cfg
        self._qbit_status = qbit
        self._blocked = blocked
        self.last_beat = time.time()
        self._on_added = on_added
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.failure: BaseException | None = None
        self._qbit = QbitWorker(lambda: QbitClient(cfg.qbittorrent, gate))
        self._guard = PoisonGuard(marker_path(cfg.state.path))
        self._topology = build_topology(cfg.rabbitmq)
        self._last_batch = 0  # size of the previous batch: a full one means a burst
        self._next: Delivery | None = None  # taken from the broker, not handled yet

    def stop(self) -> None:
        """Ask the thread to finish the command in hand and return. Any thread may call it."""
        self._stopping.set()

    def run(self) -> None:
        try:
            stay_connected(
                self._cfg.rabbitmq.url,
                "consumer",
                self._topology,
                self._consume,
                stopped=self._stopping.is_set,
                pause=self._pause,
                while_away="reconnecting until it is back",
                on_close=self._disconnected,
            )
        except TopologyConflict as exc:
            log.critical("cannot start: %s", exc)
            self.failure = exc
        except BaseException as exc:
            log.critical("the consumer thread crashed", exc_info=True)
            self.failure = exc
        finally:
            self._qbit.close()

    def _pause(self, seconds: float) -> None:
        self.last_beat = time.time()
        self._stopping.wait(seconds)

    def _disconnected(self) -> None:
        self.connected.clear()
        self._next = None  # the broker gives it back with everything else unacked

    def _consume(self, broker: Broker) -> None:
        handler = CommandHandler(
            self._cfg,
            broker,
            self._qbit.submit,
            declarations=Declarations(broker, self._topology),
            guard=self._guard,
            stopping=self._stopping.is_set,
            on_added=self._on_added,
        )
        self.connected.set()
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
                        self.last_beat = time.time()
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
        broker.sleep(0)  # read what has arrived on the socket meanwhile
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
            self.last_beat = time.time()
            handler.tend()
            broker.sleep(0.5)  # keeps the connection's heartbeats going
        if warned and not self._stopping.is_set():
            log.info("taking commands again")
