"""The composition root: builds the threads, starts them, watches them, stops them in order.

Threads: the consumer (commands), the poller (qBittorrent's view of tracked downloads) and the
publisher (lifecycle and progress events). They share the registry and the publish queue.

Shutdown order, each step bounded so the whole stays inside the 10 s of the contract:

1. the consumer stops taking commands and finishes the one in hand (its ack, retry or
   dead-lettering happens on its still-open connection);
2. the poller finishes its cycle, so no lifecycle change is left half-recorded;
3. the publisher publishes what is queued for a moment, then closes; lifecycle events it
   could not publish stay in the state file's outbox for the next start;
4. the state file is closed.

A thread that ends while nobody asked it to is a failure: the service stops the others and
exits 1, so Docker's restart policy brings it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Final

from qbit_consumer.adding import AddResult
from qbit_consumer.config import Config
from qbit_consumer.consumer import ConsumerThread
from qbit_consumer.health import WRITE_EVERY_SECONDS, health_path, write_health
from qbit_consumer.messages import AddCommand
from qbit_consumer.poller import PollerThread
from qbit_consumer.publisher import PublisherThread, PublishQueue
from qbit_consumer.qbit import LoginGate
from qbit_consumer.registry import Registry, Tracked
from qbit_consumer.state import State

log = logging.getLogger(__name__)

CONSUMER_STOP_SECONDS: Final = 5.0
POLLER_STOP_SECONDS: Final = 2.0
PUBLISHER_FLUSH_SECONDS: Final = 1.0


class Service:
    def __init__(self, cfg: Config) -> None:
        """:raises StateError: the state file cannot be used (nothing is started)."""
        self.cfg = cfg
        self._stop_requested = threading.Event()
        self.state = State(cfg.state.path)
        self.queue = PublishQueue()
        self.registry = Registry(self.state, self.queue)
        gate = LoginGate()
        self.poller = PollerThread(cfg, self.registry, self.queue, gate)
        self.consumer = ConsumerThread(cfg, gate, on_added=self._track, qbit=self.poller.qbit)
        self.publisher = PublisherThread(cfg, self.queue, self.registry.event_published)
        self._threads = (self.consumer, self.poller, self.publisher)
        self._health_file = health_path(cfg)
        self._disconnected_since: dict[str, float | None] = {"consumer": None, "publisher": None}

    def _track(self, added: list[tuple[AddCommand, AddResult]]) -> None:
        self.registry.track(
            [
                (
                    command.magnet,
                    Tracked(
                        request_id=command.request_id,
                        category=command.category,
                        name=result.torrent.name,
                        qbit_id=result.torrent.id,
                        infohash_v2=result.torrent.infohash_v2,
                        added_on=result.torrent.added_on or None,
                    ),
                )
                for command, result in added
            ]
        )

    def start(self) -> None:
        pending = self.registry.restore_outbox()
        log.info(
            "qbit-consumer starting: %d tracked downloads, %d events to publish",
            len(self.registry),
            pending,
        )
        self.publisher.start()
        self.poller.start()
        self.consumer.start()

    def request_stop(self) -> None:
        self._stop_requested.set()

    def wait(self) -> int:
        """Block until a stop is requested or a thread dies; stop everything; exit code."""
        next_report = 0.0
        while not self._stop_requested.wait(0.2):
            if time.monotonic() >= next_report:
                self._report_health()
                next_report = time.monotonic() + WRITE_EVERY_SECONDS
            dead = [t.name for t in self._threads if not t.is_alive()]
            if dead:
                log.critical("thread %s ended unexpectedly; stopping", ", ".join(dead))
                break
        return self.stop()

    def _report_health(self) -> None:
        now = time.time()
        for name, thread in (("consumer", self.consumer), ("publisher", self.publisher)):
            if thread.connected.is_set():
                self._disconnected_since[name] = None
            elif self._disconnected_since[name] is None:
                self._disconnected_since[name] = now
        try:
            write_health(
                self._health_file,
                {
                    "written_at": now,
                    "pid": os.getpid(),
                    "beats": {t.name: t.last_beat for t in self._threads},
                    "disconnected_since": self._disconnected_since,
                    "qbittorrent_reachable": self.poller.qbit.up,
                    "tracked": len(self.registry),
                    "queued_events": len(self.queue),
                },
            )
        except OSError as exc:
            log.warning("cannot write the health file %s: %s", self._health_file, exc)

    def stop(self) -> int:
        with contextlib.suppress(OSError):
            self._health_file.unlink()
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
            self.state.close()
        failed = [t.name for t in self._threads if t.failure is not None]
        if failed or not self._stop_requested.is_set():
            return 1
        log.info("qbit-consumer stopped")
        return 0


def run_service(cfg: Config) -> int:
    service = Service(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    return service.wait()
