"""The reconnect loop both broker-owning threads run, and its capped, jittered backoff.

The consumer and the publisher each own a connection (pika's are not thread-safe), and each
must outlive any broker outage: connect, declare, work until the connection fails, wait,
again. What differs between them (what they declare, how they wait, what they tidy up) is
passed in; what is the same lives here, including logging an outage once when it starts and
once when it ends, however many attempts it takes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from qbit_consumer.broker import Broker
from qbit_consumer.errors import BrokerUnavailable
from qbit_consumer.topology import Topology

log = logging.getLogger(__name__)


class Backoff:
    """``next()`` gives 0..base, 0..2*base, ... up to ``cap`` seconds; ``reset()`` after success.

    Jitter spreads the reconnects of several services that lost the same broker at once.
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
