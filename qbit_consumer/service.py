"""The composition root: builds the threads, starts them, watches them, stops them in order.

Threads: the consumer (commands), the poller (qBittorrent's view of tracked downloads) and the
publisher (lifecycle and progress events). They share the registry and the publish queue.

Shutdown order: producers before the one that publishes what they produce, so that nothing a
stopping thread records is left unpublished by a thread that stopped before it. Each step is
bounded so the whole stays inside the 10 s of the contract:

1. the consumer stops taking commands and finishes the one in hand (its ack, retry or
   dead-lettering happens on its still-open connection);
2. the poller finishes its cycle, so no lifecycle change is left half-recorded;
3. the publisher publishes what is queued for a moment, then closes; lifecycle events it
   could not publish stay in the state file's outbox for the next start;
4. the state file is closed (after a last try to write what only memory holds, when it
   could not be written), then its lock is released.

The main thread also looks after the state file every ``WRITE_EVERY_SECONDS`` (a deleted file,
a disk that can be written again: ``Registry.maintain``), just before it writes the health
file, and hands the publisher a status message when one is due (``status``): all cheap local
work; the main thread does no network I/O.

A thread that ends while nobody asked it to is a failure: the service stops the others and
exits 1, so Docker's restart policy brings it back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Final

import attrs

from qbit_consumer.commands.consumer import ConsumerThread
from qbit_consumer.config import Config
from qbit_consumer.counters import Counters
from qbit_consumer.errors import StateError
from qbit_consumer.health import WRITE_EVERY_SECONDS, HealthFile
from qbit_consumer.qbit import LoginGate
from qbit_consumer.rebuilding import Rebuilding
from qbit_consumer.status import StatusReport
from qbit_consumer.threads import CONSUMER, PUBLISHER
from qbit_consumer.tracking.lock import StateLock
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.poller import PollerThread
from qbit_consumer.tracking.publisher import PublisherThread
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State

log = logging.getLogger(__name__)

CONSUMER_STOP_SECONDS: Final = 5.0
POLLER_STOP_SECONDS: Final = 2.0
PUBLISHER_FLUSH_SECONDS: Final = 1.0


class Service:
    def __init__(self, cfg: Config) -> None:
        """:raises StateError: the state file cannot be used, or another process uses it
        (nothing is started)."""
        self.cfg = cfg
        self._stop_requested = threading.Event()
        self._state_lock = StateLock(cfg.state.path)  # first: a second service must touch nothing
        #: No state file (or an empty one): the tracked set is rebuilt from history at start.
        fresh = absent_or_empty(cfg.state.path)
        if fresh and not cfg.history.enabled:
            log.info(
                "no state file, and history is disabled: nothing to rebuild, tracking starts empty"
            )
        try:
            self.state = State(cfg.state.path)
        except StateError:
            self._state_lock.release()
            raise
        self.queue = PublishQueue()
        self.registry = Registry(self.state, self.queue)
        self.counters = Counters()
        gate = LoginGate()
        self._gate = gate  # its shut_reason() goes into the health report
        self._rebuilding = Rebuilding(
            cfg, self.registry, gate, needed=cfg.history.enabled and fresh, stop=self.request_stop
        )
        self.poller = PollerThread(cfg, self.registry, gate)
        self.consumer = ConsumerThread(
            cfg,
            gate,
            tracked=self.registry,
            qbit=self.poller.qbit,
            blocked=self._state_blocked,
            counters=self.counters,
        )
        self.publisher = PublisherThread(
            cfg, self.queue, self.registry.event_published, self.counters
        )
        self.status = StatusReport(
            cfg,
            self.counters,
            counts=self.registry.status_counts,
            qbit=self.poller.qbit,
            last_poll=lambda: self.poller.last_poll,
        )
        self._threads = (self.consumer, self.poller, self.publisher)
        self._health = HealthFile(cfg)
        self._disconnected_since: dict[str, float | None] = {CONSUMER: None, PUBLISHER: None}
        #: Per thread: the last ``rounds`` seen, and when it was seen to change (monotonic).
        self._beats = {t.name: (t.rounds, time.monotonic()) for t in self._threads}

    def _state_blocked(self) -> str | None:
        """Why commands must wait: while the tracked set is being rebuilt from history (a
        command now could meet a download not tracked yet), or while the state file cannot be
        written (a download added now would be tracked in memory only, and forgotten by a
        restart)."""
        if not self._rebuilding.done.is_set():
            return "the tracked set is being rebuilt from history"
        if self.registry.writable.is_set():
            return None
        problem = self.registry.problem
        return f"the state file cannot be written ({problem.reason if problem else 'unknown'})"

    def start(self) -> None:
        self._rebuilding.start()  # before the threads: they declare the stream
        pending = self.registry.restore_outbox()
        log.info(
            "qbit-consumer starting: %d tracked downloads, %d events to publish",
            len(self.registry),
            pending,
        )
        self.publisher.start()
        self.poller.start()
        self.consumer.start()

    def rebuild_now(self) -> int:
        """For ``qbit-consumer recover``: rebuild the tracked set (the state file was moved
        aside), write it, close the file; how many downloads are tracked. Starts no thread.

        :raises BrokerUnavailable: the history stream cannot be read now.
        :raises HistoryUnavailable: there is no history stream.
        """
        try:
            self._rebuilding.now()
            return len(self.registry)
        finally:
            self._close_state()

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._rebuilding.cancel()

    def wait(self) -> int:
        """Block until a stop is requested or a thread dies; stop everything; exit code."""
        next_report = 0.0
        while not self._stop_requested.wait(0.2):
            if self.status.due(time.monotonic()):
                self.queue.put_status(self.status.build().envelope())
            if time.monotonic() >= next_report:
                self.registry.maintain()
                self._report_health()
                next_report = time.monotonic() + WRITE_EVERY_SECONDS
            dead = [t.name for t in self._threads if not t.is_alive()]
            if dead:
                log.critical("thread %s ended unexpectedly; stopping", ", ".join(dead))
                break
        return self.stop()

    def _report_health(self) -> None:
        """Every time in the report is on ``time.monotonic()`` (see ``health``)."""
        now = time.monotonic()
        for name, thread in ((CONSUMER, self.consumer), (PUBLISHER, self.publisher)):
            if thread.connected.is_set():
                self._disconnected_since[name] = None
            elif self._disconnected_since[name] is None:
                self._disconnected_since[name] = now
        problem = self.registry.problem
        self._health.write(
            {
                "monotonic": now,
                "written_at": time.time(),  # for people reading the file
                "pid": os.getpid(),
                "beats": self._beat_times(now),
                "state_problem": None if problem is None else attrs.asdict(problem),
                "disconnected_since": self._disconnected_since,
                "qbittorrent_reachable": self.poller.qbit.up,
                "qbittorrent_refuses": self._gate.shut_reason(),
                "tracked": len(self.registry),
                "queued_events": len(self.queue),
            },
        )

    def _beat_times(self, now: float) -> dict[str, float]:
        """When each thread last went round its loop, on the monotonic clock.

        The threads count the rounds of their loops; only a change of the count matters
        here, timed by this thread. That costs at most one report interval of precision,
        against limits of a minute or more, and a wall-clock jump cannot fake a stuck thread.
        """
        for thread in self._threads:
            seen, _ = self._beats[thread.name]
            if thread.rounds != seen:
                self._beats[thread.name] = (thread.rounds, now)
        return {name: at for name, (_, at) in self._beats.items()}

    def stop(self) -> int:
        self._health.remove()
        self.consumer.stop()
        self.consumer.join(CONSUMER_STOP_SECONDS)
        self.poller.stop()
        self.poller.join(POLLER_STOP_SECONDS)
        self.publisher.stop(PUBLISHER_FLUSH_SECONDS)
        self.publisher.join(PUBLISHER_FLUSH_SECONDS + 0.5)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning(
                "left running at exit (their work is safe in RabbitMQ or the state file): %s",
                ", ".join(stuck),
            )
        else:
            self._close_state()
        failed = [t.name for t in self._threads if t.failure is not None]
        if failed or self._rebuilding.failed or not self._stop_requested.is_set():
            return 1
        log.info("qbit-consumer stopped")
        return 0

    def _close_state(self) -> None:
        """A last try to write what only memory holds; if the disk still refuses, say what
        that costs instead of exiting as if nothing happened."""
        self.registry.maintain()
        problem = self.registry.problem
        if problem is not None:
            log.error(
                "stopping while the state file %s cannot be written (%s): changes of the last "
                "%.0f s are not saved (after the restart, events of that time may be reported "
                "again)",
                problem.path,
                problem.reason,
                time.monotonic() - problem.since,
            )
        self.state.close()
        self._state_lock.release()


def absent_or_empty(path: Path) -> bool:
    """No state file to start from: none, or one of zero bytes (a failed copy, a full disk)."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def run_service(cfg: Config) -> int:
    service = Service(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    return service.wait()
