"""The composition root: builds the threads, starts them, watches them, stops them in order.

Shutdown order: the consumer stops first (it finishes the command in hand, so its ack or its
dead-lettering happens before the connection closes); nothing else is running yet.

A thread that ends while nobody asked it to is a failure: the service then stops the others
and ``run`` returns 1, so Docker's restart policy brings it back.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Final

from qbit_consumer.config import Config
from qbit_consumer.consumer import ConsumerThread
from qbit_consumer.qbit import LoginGate

log = logging.getLogger(__name__)

#: CONTRACT section 7: out within 10 s of SIGTERM.
STOP_TIMEOUT_SECONDS: Final = 8.0


class Service:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._stop_requested = threading.Event()
        self.consumer = ConsumerThread(cfg, LoginGate())

    def start(self) -> None:
        log.info("qbit-consumer starting", extra={"category": None})
        self.consumer.start()

    def request_stop(self) -> None:
        self._stop_requested.set()

    def wait(self) -> int:
        """Block until a stop is requested or a thread dies; stop everything; exit code."""
        while not self._stop_requested.wait(0.2):
            if not self.consumer.is_alive():
                break
        return self.stop()

    def stop(self) -> int:
        self.consumer.stop()
        self.consumer.join(STOP_TIMEOUT_SECONDS)
        if self.consumer.is_alive():
            log.error("the consumer did not stop within %g s", STOP_TIMEOUT_SECONDS)
            return 1
        if self.consumer.failure is not None or not self._stop_requested.is_set():
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
