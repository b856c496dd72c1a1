"""A thread that owns a ``QbitClient`` and runs work for another thread.

The consumer thread must keep servicing its broker connection while qBittorrent answers
(``Broker.wait_for``), so its qBittorrent calls run here; the QbitClient lives on this thread
only (neither it nor qbittorrent-api's client is thread-safe).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from qbit_consumer.qbit.client import QbitClient

T = TypeVar("T")


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
