"""The consumer thread: takes `downloads.add` commands and carries them out, a batch at a time.

It owns its broker connection (pika's BlockingConnection is not thread-safe). qBittorrent calls
run on a one-worker helper thread while this thread keeps servicing the connection
(``Broker.wait_for``), so a slow qBittorrent never starves the heartbeats. The QbitClient lives
on that helper thread only.

Lifecycle: ``start()`` -> ``run()`` loops connect / declare / consume, reconnecting with backoff
when the broker goes away; ``stop()`` asks it to finish the command in hand and return.
A ``TopologyConflict`` or an unexpected exception ends the thread with ``failure`` set, which
the service turns into a non-zero exit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from qbit_consumer.adding import AddResult
from qbit_consumer.broker import Broker, Delivery
from qbit_consumer.commands import CommandHandler
from qbit_consumer.config import Config
from qbit_consumer.errors import TopologyConflict
from qbit_consumer.messages import AddCommand
from qbit_consumer.qbit import LoginGate, QbitClient, Reachability
from qbit_consumer.reconnect import stay_connected
from qbit_consumer.redact import redact_url
from qbit_consumer.topology import build_topology

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a burst may wait for the rest of the prefetch window to arrive (see ``_batch``).
BATCH_LINGER_SECONDS = 0.002


class ConsumerThread(threading.Thread):
    def __init__(
        self,
        cfg: Config,
        gate: LoginGate,
        on_added: Callable[[list[tuple[AddCommand, AddResult]]], None] | None = None,
        qbit: Reachability | None = None,
    ) -> None:
        super().__init__(name="consumer", daemon=True)
        self._cfg = cfg
        self._gate = gate
        self._qbit_status = qbit
        self.last_beat = time.time()
        self._on_added = on_added
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.failure: BaseException | None = None
        self._qbit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-qbit")
        self._qbit: QbitClient | None = None
        self._last_batch = 0  # size of the previous batch: a full one means a burst

    def stop(self) -> None:
        """Ask the thread to finish the command in hand and return. Any thread may call it."""
        self._stopping.set()

    def run(self) -> None:
        try:
            stay_connected(
                self._cfg.rabbitmq.url,
                "consumer",
                build_topology(self._cfg.rabbitmq),
                self._consume,
                stopped=self._stopping.is_set,
                pause=self._pause,
                while_away="reconnecting until it is back",
                on_close=self.connected.clear,
            )
        except TopologyConflict as exc:
            log.critical("cannot start: %s", exc)
            self.failure = exc
        except BaseException as exc:
            log.critical("the consumer thread crashed", exc_info=True)
            self.failure = exc
        finally:
            self._qbit_thread.submit(self._close_qbit)
            self._qbit_thread.shutdown(wait=True, cancel_futures=False)

    def _pause(self, seconds: float) -> None:
        self.last_beat = time.time()
        self._stopping.wait(seconds)

    def _consume(self, broker: Broker) -> None:
        handler = CommandHandler(
            self._cfg,
            broker,
            lambda work: self._qbit_thread.submit(self._with_qbit, work),
            self._on_added,
        )
        self.connected.set()
        while not self._stopping.is_set():
            if not self._qbit_answers():
                self._wait_for_qbittorrent(broker)
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
                for delivery in deliveries:
                    self.last_beat = time.time()
                    if delivery is not None:
                        handler.handle_batch(self._batch(broker, delivery, deliveries))
                    if self._stopping.is_set() or not self._qbit_answers():
                        break

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
        """
        batch = [first]
        limit = self._cfg.rabbitmq.prefetch_count
        broker.sleep(0)  # read what has arrived on the socket meanwhile
        deadline = time.monotonic() + BATCH_LINGER_SECONDS
        while len(batch) < limit:
            if broker.waiting():
                more = next(deliveries)
                if more is None:
                    break
                batch.append(more)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (len(batch) == 1 and self._last_batch < limit):
                break
            broker.idle(remaining)  # returns as soon as a delivery arrives
        self._last_batch = len(batch)
        return batch

    def _qbit_answers(self) -> bool:
        return self._qbit_status is None or self._qbit_status.up

    def _wait_for_qbittorrent(self, broker: Broker) -> None:
        """While polls fail, commands wait in their queue instead of going round the retry
        queue: a command taken now could only fail."""
        assert self._qbit_status is not None
        warned = False
        while not self._stopping.is_set() and not self._qbit_answers():
            if self._qbit_status.known.is_set() and not warned:
                log.warning("qBittorrent does not answer: not taking commands until it does")
                warned = True
            self.last_beat = time.time()
            broker.sleep(0.5)  # keeps the connection's heartbeats going
        if warned and not self._stopping.is_set():
            log.info("qBittorrent answers again: taking commands")

    def _with_qbit(self, work: Callable[[QbitClient], T]) -> T:
        """Runs on the helper thread, which alone owns the QbitClient."""
        if self._qbit is None:
            self._qbit = QbitClient(self._cfg.qbittorrent, self._gate)
        return work(self._qbit)

    def _close_qbit(self) -> None:
        if self._qbit is not None:
            self._qbit.close()
