"""The status message the main thread builds (``status.StatusReport``): when one is due, and
what it says, from the figures the running service's parts keep."""

from __future__ import annotations

import time

from qbit_consumer import __version__
from qbit_consumer.config import Config, ServiceConfig
from qbit_consumer.contract.events import EVENT_TYPES
from qbit_consumer.contract.status import COMMAND_OUTCOMES, read_status
from qbit_consumer.counters import Counters
from qbit_consumer.model import Reachability
from qbit_consumer.status import StatusReport


def report(
    interval: float = 60,
    counters: Counters | None = None,
    qbit: Reachability | None = None,
    last_poll=lambda: None,
) -> StatusReport:
    """120 downloads tracked, 3 of them incomplete, 2 events in the outbox."""
    cfg = Config(service=ServiceConfig(name="nas-1", status_interval_seconds=interval))
    return StatusReport(
        cfg,
        counters or Counters(),
        counts=lambda: (120, 3, 2),
        qbit=qbit or Reachability(),
        last_poll=last_poll,
    )


def test_the_first_status_is_due_at_once_then_one_per_interval_and_a_late_one_brings_no_burst():
    status = report(interval=60)
    start = time.monotonic()

    assert status.due(start)
    assert not status.due(start + 59)
    assert status.due(start + 60)
    assert status.due(start + 600)  # the main loop was held up: one now, not nine
    assert not status.due(start + 601)
    assert status.due(start + 660)


def test_no_status_is_ever_due_when_they_are_off():
    status = report(interval=0)
    assert not any(status.due(time.monotonic() + s) for s in (0, 60, 86_400))


def test_the_status_says_what_the_parts_keep_with_every_outcome_and_event_counted_from_zero():
    counters = Counters()
    counters.commands(["added", "added", "dead_lettered"])
    counters.events(["downloads.added", "downloads.added", "downloads.progress"])
    qbit = Reachability()
    qbit.set(up=True)
    qbit.version = "v5.3.0"
    status = report(counters=counters, qbit=qbit, last_poll=lambda: (1_700_000_000.0, 0.0421))

    built = status.build()

    assert (built.instance, built.version, built.role) == ("nas-1", __version__, "active")
    assert built.commands == {
        **dict.fromkeys(COMMAND_OUTCOMES, 0),
        "added": 2,
        "dead_lettered": 1,
    }
    assert built.events == {
        **dict.fromkeys(EVENT_TYPES, 0),
        "downloads.added": 2,
        "downloads.progress": 1,
    }
    assert (built.tracked.total, built.tracked.active, built.outbox) == (120, 3, 2)
    assert built.qbittorrent.reachable and built.qbittorrent.version == "v5.3.0"
    assert built.qbittorrent.since is not None
    assert built.last_poll is not None
    assert (built.last_poll.at, built.last_poll.seconds) == ("2023-11-14T22:13:20.000Z", 0.042)
    assert read_status(built.envelope().body) == built


def test_before_the_first_poll_qbittorrent_is_unknown_and_there_is_no_last_poll():
    built = report().build()
    assert built.qbittorrent.reachable is False
    assert (built.qbittorrent.since, built.qbittorrent.version, built.last_poll) == (
        None,
        None,
        None,
    )
