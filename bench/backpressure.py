"""Backpressure: RabbitMQ unavailable for 60 s while 1,000 tracked downloads are polled every
second, in two ways:

* away: the service reaches RabbitMQ through a TCP proxy that is cut (the broker itself stays
  up for the benchmark's own connections);
* blocked: RabbitMQ is under a memory alarm and blocks every connection that publishes (its
  answer to a full disk or memory), while the TCP connections stay up.

During the 60 s, 100 tracked torrents are deleted in qBittorrent, so 100 `downloads.removed`
events are made while nothing can be published. Figures: the service's RSS before, during
(max) and after, how many of the 100 removals arrived once the broker was back, and how long
after.

The benchmark listens only for `downloads.added` and `downloads.removed` (1,000 progress events
a second would bury them), and keeps its own connection serviced through the outage.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import ServiceProcess, memory_mib, publish_commands, qbittorrent
from tests.fixtures.faults import TcpProxy, broker_memory_alarm
from tests.fixtures.rabbitmq import wait_until


def broker_away(
    root: Path, amqp_url: str, tracked: int = 1000, outage: float = 60
) -> dict[str, float]:
    proxy = TcpProxy("127.0.0.1", urlsplit(amqp_url).port or 5672)
    parts = urlsplit(amqp_url)
    via_proxy = parts._replace(
        netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    ).geturl()

    @contextlib.contextmanager
    def cut() -> Iterator[None]:
        proxy.cut()
        try:
            yield
        finally:
            proxy.restore()

    try:
        return _unavailable(root, amqp_url, via_proxy, tracked, outage, cut)
    finally:
        proxy.close()


def broker_blocked(
    root: Path, amqp_url: str, tracked: int = 1000, outage: float = 60
) -> dict[str, float]:
    return _unavailable(root, amqp_url, amqp_url, tracked, outage, broker_memory_alarm)


def _unavailable(
    root: Path,
    amqp_url: str,
    service_url: str,
    tracked: int,
    outage: float,
    fault: Callable[[], AbstractContextManager[None]],
) -> dict[str, float]:
    qbit = qbittorrent(root, f"backpressure-{secrets.token_hex(3)}")
    qbit.start()
    service = ServiceProcess(
        root, amqp_url, qbit, rabbitmq={"url": service_url}, polling={"interval_seconds": 1}
    )
    service.amqp_url = amqp_url  # the benchmark itself talks to the broker directly
    try:
        events = service.start(binding_keys=["downloads.added", "downloads.removed"])
        assert events is not None
        hashes = [secrets.token_hex(20) for _ in range(tracked)]
        publish_commands(amqp_url, service.names.command_exchange, hashes)
        wait_until(
            lambda: len(events.of("downloads.added")) >= tracked, 300, "every added", interval=0.1
        )
        time.sleep(5)
        before = memory_mib(service.pid)[0]

        doomed = hashes[:100]
        during = []
        with fault():
            qbit.client().torrents_delete(delete_files=True, torrent_hashes=doomed)
            end = time.monotonic() + outage
            while time.monotonic() < end:
                during.append(memory_mib(service.pid)[0])
                events.idle(1)
        restored = time.monotonic()
        wait_until(
            lambda: len({e["hash"] for e in events.of("downloads.removed")}) >= len(doomed),
            120,
            "the removals made during the outage",
            interval=0.05,
        )
        removed_after = time.monotonic() - restored
        after = memory_mib(service.pid)[0]
        removed = {e["hash"] for e in events.of("downloads.removed")}
        events.close()
        return {
            "tracked": tracked,
            "outage_seconds": outage,
            "rss_before_mib": before,
            "rss_max_during_mib": max(during),
            "rss_after_mib": after,
            "removed_expected": len(doomed),
            "removed_delivered": len(removed & set(doomed)),
            "seconds_until_all_removed_delivered": removed_after,
        }
    finally:
        service.stop()
        service.cleanup()
        qbit.stop()
