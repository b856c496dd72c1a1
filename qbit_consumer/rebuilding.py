"""Rebuilding the tracked set at start, when the state file was lost (CONTRACT section 8).

The state file is a cache of what the history stream and qBittorrent know: when the service
starts without one (or with an empty one) and history is enabled, the tracked set is rebuilt
from the trail (``history.recovery`` decides what it says) and from qBittorrent's managed tag,
before any command is taken: ``done`` is clear until then, and the consumer waits for it.

The trail is read before the service's threads start, because they declare the stream, and a
stream being created refuses readers for a moment (541 INTERNAL_ERROR). When the broker does
not answer then, the reading goes on on a thread of its own with a growing pause: an empty set
would forget every download in flight. An empty or absent stream means a first start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from qbit_consumer.broker.reconnect import Backoff
from qbit_consumer.broker.stream import StreamReader
from qbit_consumer.config import Config
from qbit_consumer.contract.messages import MANAGED_TAG
from qbit_consumer.errors import BrokerUnavailable, HistoryUnavailable, TransientError
from qbit_consumer.history.recovery import rebuild, unknown_to_history
from qbit_consumer.history.trail import entries
from qbit_consumer.model import Download
from qbit_consumer.qbit import LoginGate, QbitClient
from qbit_consumer.tracking.registry import Registry

log = logging.getLogger(__name__)


class Rebuilding:
    def __init__(
        self,
        cfg: Config,
        registry: Registry,
        gate: LoginGate,
        *,
        needed: bool,
        stop: Callable[[], None],
    ) -> None:
        """``needed``: there is no state file and history is enabled; ``stop`` asks the
        service to stop (a rebuild that failed unexpectedly: the restart tries again)."""
        self._cfg = cfg
        self._registry = registry
        self._gate = gate
        self._needed = needed
        self._stop = stop
        self._stopped = threading.Event()
        #: Set once the tracked set is complete (rebuilt, or nothing to rebuild).
        self.done = threading.Event()
        self.failed = False
        if not needed:
            self.done.set()

    def start(self) -> None:
        """Rebuild now, or go on on a thread of its own while the broker does not answer."""
        if not self._needed:
            return
        try:
            history = self._read_history()
        except BrokerUnavailable:
            threading.Thread(target=self._retrying_or_stop, name="rebuild", daemon=True).start()
        except HistoryUnavailable:
            self._start_empty()
        else:
            self._adopt(history)

    def now(self) -> None:
        """Rebuild at once (``qbit-consumer recover``).

        :raises BrokerUnavailable: the history stream cannot be read now.
        :raises HistoryUnavailable: there is no history stream.
        """
        self._adopt(self._read_history())

    def cancel(self) -> None:
        """The service stops: a rebuild waiting for the broker gives up."""
        self._stopped.set()

    def _retrying_or_stop(self) -> None:
        """A rebuild that fails unexpectedly stops the service (exit 1) rather than leave the
        commands waiting forever: the restart tries again, the state file still absent."""
        try:
            self._retrying()
        except BaseException:
            log.critical("rebuilding the tracked set from history failed; stopping", exc_info=True)
            self.failed = True
            self._stop()

    def _retrying(self) -> None:
        """Rebuild the tracked set from the history stream and qBittorrent's managed tag, on a
        thread of its own; the consumer takes no command until it is done (``_state_blocked``).
        The broker must answer: an empty set would forget every download in flight, so this
        waits for it, saying why once."""
        backoff = Backoff(base=1.0, cap=10.0)
        said = False
        while True:
            try:
                history = self._read_history()
                break
            except BrokerUnavailable as exc:
                # Also a stream's leader that just died (541 INTERNAL_ERROR, STACK.md): retry.
                if not said:
                    log.error("cannot read the history stream to rebuild the state file: %s", exc)
                    said = True
                if self._stopped.wait(backoff.next()):
                    return
            except HistoryUnavailable:
                self._start_empty()
                return
        self._adopt(history)

    def _start_empty(self) -> None:
        """A first start (no stream yet), or an empty history: nothing to rebuild."""
        log.info("no state file and nothing in history yet: tracking starts empty")
        self.done.set()

    def _adopt(self, from_history: list[Download] | None) -> None:
        """Track what history says, plus the managed torrents it does not know."""
        if from_history is None:
            self._start_empty()
            return
        started = time.monotonic()
        qbit = QbitClient(self._cfg.qbittorrent, self._gate)
        try:
            managed = unknown_to_history(qbit.tagged(MANAGED_TAG), from_history)
        except TransientError as exc:
            log.warning(
                "qBittorrent's managed torrents could not be listed (%s): tracking what "
                "history knows",
                exc,
            )
            managed = []
        finally:
            qbit.close()
        self._registry.adopt([*from_history, *managed])
        self.done.set()
        log.log(
            logging.WARNING if from_history or managed else logging.INFO,
            "no state file: rebuilt %d tracked downloads from history and %d more from "
            "qBittorrent's %r tag in %.1f s; what happened meanwhile is reported once",
            len(from_history),
            len(managed),
            MANAGED_TAG,
            time.monotonic() - started,
        )

    def _read_history(self) -> list[Download] | None:
        """The downloads the trail says are tracked; None when the trail is empty."""
        stream = self._cfg.history.stream
        reader = StreamReader(self._cfg.rabbitmq.url, role="recovery")
        reader.connect()
        try:
            end = reader.stream_end(stream)
            return None if end is None else rebuild(entries(reader.read(stream, "first", end)))
        finally:
            reader.close()
