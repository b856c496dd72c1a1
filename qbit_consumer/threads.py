"""What the service's three threads have in common: a name, a heartbeat, a stop flag, and the
one way a thread ends when something goes wrong.

Each thread's ``work`` loops until ``stopping``; it calls ``beat`` once a round, so the health
report can tell a thread that waits from one that is stuck. An exception that escapes ``work``
ends the thread with ``failure`` set; the service notices that the thread is gone, stops the
others and exits 1, so that Docker's restart policy brings it back. A ``TopologyConflict`` is
the one expected way to end (a queue declared with other arguments: a person must decide);
anything else is logged as a crash, with its traceback.

The order in which the service stops them, and why, is in ``service``.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from qbit_consumer.errors import TopologyConflict

log = logging.getLogger(__name__)

CONSUMER: Final = "consumer"
POLLER: Final = "poller"
PUBLISHER: Final = "publisher"
#: Every thread of a running service, in the order they are stopped.
THREAD_NAMES: Final = (CONSUMER, POLLER, PUBLISHER)


class ServiceThread(threading.Thread):
    """A daemon thread: at exit the interpreter does not wait for one stuck in a network call
    (its work is safe in RabbitMQ or the state file, see ``service``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.failure: BaseException | None = None
        #: Rounds of the thread's loop so far; the health report looks at whether it changes.
        self.rounds = 0
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Ask the thread to finish what it has in hand and return. Any thread may call it."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def beat(self) -> None:
        self.rounds += 1

    def run(self) -> None:
        try:
            self.work()
        except TopologyConflict as exc:
            log.critical("the %s cannot go on: %s", self.name, exc)
            self.failure = exc
        except BaseException as exc:
            log.critical("the %s thread crashed", self.name, exc_info=True)
            self.failure = exc
        finally:
            self.finish()

    def work(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Runs last, however ``work`` ended: release what only this thread may touch."""
