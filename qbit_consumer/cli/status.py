"""``qbit-consumer status``: the newest ``downloads.status`` and its age; a dead-man's switch.

It reads the last-value queue the service keeps its status in (CONTRACT section 11) and gives
the message back untouched, so any number of readers (cron, a monitoring agent, a person in
the management UI) see the same one. The service publishes one every
``[service] status_interval_seconds``; older than three intervals means it stopped, hangs, or
cannot reach RabbitMQ: exit 1, which any scheduler can alert on without knowing RabbitMQ.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, TextIO

from qbit_consumer.broker.operator import OperatorBroker
from qbit_consumer.cli.exits import EXIT_FAILURE, EXIT_OK
from qbit_consumer.cli.ops import duration
from qbit_consumer.config import Config
from qbit_consumer.contract.events import read_rfc3339
from qbit_consumer.contract.status import Status, read_status
from qbit_consumer.contract.structure import FieldError
from qbit_consumer.errors import QueueMissing
from qbit_consumer.logs import escape_controls

#: A status older than this many intervals is stale: one lost to a broker restart is not.
STALE_INTERVALS: Final = 3


def status(cfg: Config, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the newest status (or its body, ``as_json``); 0 while it is fresh."""
    out = out or sys.stdout  # the stream of the moment (tests replace it)
    interval = cfg.service.status_interval_seconds
    queue = cfg.rabbitmq.status_queue
    if interval == 0:
        print(
            "qbit-consumer: status messages are off ([service] status_interval_seconds = 0)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    body = _newest(cfg, queue)
    if body is None:
        print(f"no status in {queue}: the service has not published one (yet)", file=out)
        return EXIT_FAILURE
    try:
        report = read_status(body)
    except FieldError as exc:
        field = f"'{exc.field}' " if exc.field else ""
        print(f"the message in {queue} is not a status: {field}{exc.message}", file=out)
        return EXIT_FAILURE
    age = (datetime.now(UTC) - _when(report.occurred_at)).total_seconds()
    if as_json:
        print(body.decode("utf-8", "replace"), file=out)
    else:
        for line in describe(report, age, interval):
            print(escape_controls(line), file=out)
    limit = STALE_INTERVALS * interval
    if age > limit:
        print(
            f"STALE: the newest status is {duration(age)} old, more than {STALE_INTERVALS} "
            f"intervals of {interval:g} s: the service is stopped, stuck, or cut off from "
            "RabbitMQ",
            file=out,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _newest(cfg: Config, queue: str) -> bytes | None:
    """The body of the message in the status queue, which is given back at once."""
    broker = OperatorBroker(cfg.rabbitmq.url, role="status")
    broker.connect()
    try:
        delivery = broker.get(queue)
        if delivery is not None:
            broker.put_back(delivery)
    except QueueMissing as exc:
        raise QueueMissing(
            f"{exc}: the service declares it when it starts (with this config's broker, "
            "vhost and [rabbitmq] status_queue)"
        ) from None
    finally:
        broker.close()
    return None if delivery is None else delivery.body


def describe(report: Status, age: float, interval: float) -> list[str]:
    """The status in lines a person reads at a glance."""
    qbit = report.qbittorrent
    lines = [
        f"{report.instance} {report.version} ({report.role}): status of {report.occurred_at}, "
        f"{duration(age)} ago (one every {interval:g} s)",
        f"  up since {report.started_at} ({duration(report.uptime_seconds)})",
        f"  qBittorrent {qbit.version or '(version unknown)'}: "
        + ("reachable" if qbit.reachable else "NOT REACHABLE")
        + (f" since {qbit.since}" if qbit.since else ""),
        f"  tracked: {report.tracked.total} downloads, {report.tracked.active} not complete",
        f"  commands: {_counts(report.commands, every=True)}",
        f"  events: {_counts(report.events) or 'none yet'}",
        f"  outbox: {report.outbox} event(s) waiting for RabbitMQ",
    ]
    if report.last_poll is None:
        lines.append("  last poll: none yet")
    else:
        lines.append(f"  last poll: {report.last_poll.at}, took {report.last_poll.seconds:g} s")
    return lines


def _counts(counts: Mapping[str, int], *, every: bool = False) -> str:
    """``12 completed, 3 added``; events without a count are left out (there are many)."""
    return ", ".join(
        f"{n} {name.removeprefix('downloads.').replace('_', '-')}"
        for name, n in counts.items()
        if every or n
    )


def _when(rfc3339: str) -> datetime:
    try:
        when = read_rfc3339(rfc3339)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)  # unreadable: as old as can be, hence stale
    return when if when.tzinfo else when.replace(tzinfo=UTC)
