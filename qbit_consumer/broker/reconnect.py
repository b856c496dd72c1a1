"""The reconnect loop both broker-owning threads run, its capped, jittered backoff, and the
upkeep both do while connected: declaring their topology again, and pacing what the broker
refuses.

The consumer and the publisher each own a connection (pika's are not thread-safe), and each
must outlive any broker outage: connect, declare, work until the connection fails, wait,
again. What differs between them (what they declare, how they wait, what they tidy up) is
passed in; what is the same lives here, including logging an outage once when it starts and
once when it ends, however many attempts it takes.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from qbit_consumer.broker.connection import Broker
from qbit_consumer.broker.topology import REDECLARE_SECONDS, REROUTE_AFTER_SECONDS, Topology
from qbit_consumer.errors import BrokerUnavailable

log = logging.getLogger(__name__)


class Backoff:
    """``next()`` gives a wait between half and all of ``base``, then of 2*``base``, 4*``base``
    ... up to ``cap`` seconds; ``reset()`` after a success.

    The jitter spreads the reconnects of several services that lost the same broker at once;
    the lower half is cut off so that no wait is next to nothing.
    """

    def __init__(self, base: float = 1.0, cap: float = 10.0) -> None:
        self._base = base
        self._cap = cap
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._cap, self._base * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - not cryptographic

    def reset(self) -> None:
        self._attempt = 0


class Refusals:
    """A stretch of refusals (nacks) by the broker: each one lengthens the pause before the
    next offer, from 1 s up to ``cap``, so that a full queue is not flooded with offers it can
    only refuse; the first and the last of a stretch are what the caller logs."""

    def __init__(self, cap: float = 60.0) -> None:
        self._backoff = Backoff(base=1.0, cap=cap)
        self._until: float | None = None  # time.monotonic() of the next offer; None: accepted

    def remaining(self) -> float:
        """Seconds until the next offer may go out (0 when it may now)."""
        return 0.0 if self._until is None else max(0.0, self._until - time.monotonic())

    def refused(self) -> bool:
        """One more refusal; True when it starts a stretch."""
        started = self._until is None
        self._until = time.monotonic() + self._backoff.next()
        return started

    def accepted(self) -> bool:
        """The broker took what it refused; True when that ends a stretch."""
        ended = self._until is not None
        self._until = None
        self._backoff.reset()
        return ended


class Declarations:
    """When a connected thread declares its topology again.

    RabbitMQ tells nobody that a binding was deleted, or that an exchange was deleted and
    declared again without its bindings (the platform's), so: every ``REDECLARE_SECONDS``, and
    at once when a message found no queue, at most every ``REROUTE_AFTER_SECONDS`` (with
    nobody bound at all, every event finds none).
    """

    def __init__(self, broker: Broker, topology: Topology) -> None:
        self._broker = broker
        self._topology = topology
        self._declared_at = time.monotonic()  # ``stay_connected`` declared it on connecting
        self._rerouted_at = -math.inf

    def tend(self) -> None:
        """Declare again if it is due."""
        if time.monotonic() - self._declared_at >= REDECLARE_SECONDS:
            self.declare()

    def declare(self) -> None:
        self._broker.declare(self._topology)
        self._declared_at = time.monotonic()

    def reroute(self) -> bool:
        """Declare again because messages found no queue; False (nothing done) when that was
        done too recently, and sending them again would be as useless."""
        if time.monotonic() - self._rerouted_at < REROUTE_AFTER_SECONDS:
            return False
        self._rerouted_at = time.monotonic()
        self.declare()
        return True


def stay_connected(
    url: str,
    role: str,
    topology: Topology,
    work: Callable[[Broker], None],
    *,
    stopped: Callable[[], bool],
    pause: Callable[[float], None],
    while_away: str,
    on_close: Callable[[], None] = lambda: None,
) -> None:
    """Connect, declare ``topology`` and run ``work`` until ``stopped()``; when the broker goes
    away (``BrokerUnavailable``), ``pause`` for a backoff and start again.

    ``while_away`` completes the outage's log line (what happens meanwhile); ``on_close`` runs
    before each connection is closed.
    :raises TopologyConflict: something declared differently already exists; retrying cannot
        help, so the caller stops.
    """
    backoff = Backoff()
    outage: str | None = None
    while not stopped():
        broker = Broker(url, role=role)
        try:
            broker.connect()
            broker.declare(topology)
            if outage is not None:
                log.warning("%s reconnected to RabbitMQ after: %s", role, outage)
            outage = None
            backoff.reset()
            work(broker)
        except BrokerUnavailable as exc:
            if outage is None:
                log.error("%s lost RabbitMQ; %s: %s", role, while_away, exc)
                outage = str(exc)
            pause(backoff.next())
        finally:
            on_close()
            broker.close()
