"""One poll cycle at a time (``PollerThread.poll_once``, the thread never started) against the fake
qBittorrent, a real registry and state file, and the publish queue the events land in
(docs/lifecycle.md says which event each change makes, and how often)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from qbit_consumer.config import Config, PollingConfig
from qbit_consumer.contract.events import rfc3339
from qbit_consumer.errors import TransientError
from qbit_consumer.model import Download
from qbit_consumer.qbit import LoginGate
from qbit_consumer.tracking import poller as poller_module
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.poller import (
    COMPLETED_SWEEP_CYCLES,
    REMOVAL_CONFIRM_SECONDS,
    PollerThread,
)
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State
from tests.stubs import Clock, FakeQbit, torrent

H = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
THRESHOLD = 3


@attrs.define
class Cycle:
    """A poller, what it tracks, the qBittorrent it polls, and the clock it reads."""

    poller: PollerThread
    registry: Registry
    queue: PublishQueue
    qbit: FakeQbit
    clock: Clock

    def track(self, *hashes: str) -> None:
        for h in hashes:
            self.qbit.listed.setdefault(h, torrent(h))
        self.registry.track(
            [
                Download.added(hash=h, qbit_id=h, request_id=f"req-{h[:4]}", category="tv")
                for h in hashes
            ]
        )

    def poll(self, seconds_later: float = 5.0) -> list[dict]:
        """One cycle ``seconds_later`` than the last; the events it queued, decoded."""
        self.clock.advance(seconds_later)
        self.poller.poll_once(self.qbit)
        return [json.loads(item.body) for item in self.queue.take(10_000)]


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


@pytest.fixture
def cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cycle:
    clock = Clock()
    monkeypatch.setattr(poller_module, "time", clock)
    queue = PublishQueue()
    registry = Registry(State(tmp_path / "s.sqlite3"), queue)
    cfg = Config(polling=PollingConfig(failure_alert_threshold=THRESHOLD))
    return Cycle(PollerThread(cfg, registry, LoginGate()), registry, queue, FakeQbit(), clock)


def test_progress_is_published_every_cycle_while_incomplete(cycle):
    cycle.track(H)
    seen = []
    for fraction in (0.0, 0.25, 0.25, 0.5):
        cycle.qbit.set_progress(H, fraction)
        events = cycle.poll()
        assert names(events) == ["downloads.progress"]
        seen.append(events[0]["progress"])
    assert seen == [0.0, 0.25, 0.25, 0.5]
    assert events[0]["request_id"] == f"req-{H[:4]}"


def test_completed_is_published_exactly_once_and_no_progress_follows(cycle):
    cycle.track(H)
    cycle.qbit.set_progress(H, 0.9)
    cycle.poll()
    cycle.qbit.complete(H)

    assert names(cycle.poll()) == ["downloads.completed"]
    later = [event for _ in range(COMPLETED_SWEEP_CYCLES + 1) for event in cycle.poll()]

    assert later == []
    [download] = cycle.registry.snapshot()
    assert download.stage == "completed"


def test_paused_is_published_once_per_pause(cycle):
    cycle.track(H)
    cycle.poll()
    cycle.qbit.pause(H)

    pauses = [names(cycle.poll()).count("downloads.paused") for _ in range(3)]

    assert pauses == [1, 0, 0]


def test_a_removal_is_published_only_after_missing_for_the_confirm_time_and_tracking_ends(cycle):
    cycle.track(H)
    cycle.poll()
    cycle.qbit.remove(H)

    first_missed = cycle.poll()
    almost = cycle.poll(seconds_later=REMOVAL_CONFIRM_SECONDS - 0.1)
    confirmed = cycle.poll(seconds_later=0.1)

    assert (first_missed, almost) == ([], [])
    assert names(confirmed) == ["downloads.removed"]
    assert confirmed[0]["hash"] == H
    assert len(cycle.registry) == 0
    assert cycle.poll() == []  # not reported twice


def test_a_failed_poll_in_between_starts_the_removal_confirmation_again(cycle):
    cycle.track(H)
    cycle.poll()
    cycle.qbit.remove(H)
    cycle.poll()
    cycle.qbit.fail(TransientError("qBittorrent is unreachable"))
    cycle.poll(seconds_later=1.0)

    assert cycle.poll(seconds_later=REMOVAL_CONFIRM_SECONDS) == []  # missed again: from now
    assert names(cycle.poll(seconds_later=REMOVAL_CONFIRM_SECONDS)) == ["downloads.removed"]


def test_failed_polls_up_to_the_threshold_give_one_polling_failed_then_one_recovered(cycle):
    cycle.track(H)
    cycle.poll()
    cycle.qbit.fail(TransientError("qBittorrent is unreachable"), times=THRESHOLD + 2)

    during = [names(cycle.poll()) for _ in range(THRESHOLD + 2)]
    assert during == [[]] * (THRESHOLD - 1) + [["downloads.polling_failed"]] + [[]] * 2
    assert not cycle.poller.qbit.up

    after = cycle.poll()

    assert cycle.poller.qbit.up
    assert names(after) == ["downloads.polling_recovered", "downloads.progress"]
    assert after[0]["outage_seconds"] == 5.0 * (THRESHOLD + 2)
    assert names(cycle.poll()) == ["downloads.progress"]


def test_an_outage_shorter_than_the_threshold_publishes_neither_alert(cycle):
    cycle.qbit.fail(TransientError("timeout"), times=THRESHOLD - 1)  # nothing tracked: pings

    events = [event for _ in range(THRESHOLD + 1) for event in cycle.poll()]

    assert events == []
    # qBittorrent's version is asked once it answers (for the status message), not every cycle.
    assert cycle.qbit.calls == ["ping"] * THRESHOLD + ["version", "ping"]


def test_the_status_learns_qbittorrents_version_after_each_outage_and_when_reachability_changed(
    cycle,
):
    cycle.poll()
    first_up = cycle.poller.qbit.since
    assert (cycle.poller.qbit.up, cycle.poller.qbit.version) == (True, "v5.3.0")
    cycle.poll()
    assert cycle.poller.qbit.since == first_up  # still up: no change to date
    cycle.qbit.fail(TransientError("timeout"), times=2)
    cycle.poll()
    down = cycle.poller.qbit.since
    cycle.poll()
    assert (cycle.poller.qbit.up, cycle.poller.qbit.since) == (False, down)
    cycle.poll()

    assert cycle.poller.qbit.up and cycle.poller.qbit.since != down
    assert cycle.qbit.calls.count("version") == 2
    at, seconds = cycle.poller.last_poll or (0.0, -1.0)
    assert at > 0 and seconds >= 0


def test_polling_failed_counts_the_failures_and_dates_the_outage_from_the_first(cycle):
    cycle.qbit.fail(TransientError("HTTP 503"), times=THRESHOLD)
    began = cycle.clock.time() + 5.0

    [failed] = [event for _ in range(THRESHOLD) for event in cycle.poll()]

    assert failed["event"] == "downloads.polling_failed"
    assert (failed["consecutive_failures"], failed["error"]) == (THRESHOLD, "HTTP 503")
    assert failed["since"] == rfc3339(began)


def test_completed_downloads_are_looked_at_once_every_sweep_cycles(cycle):
    completed = [f"{n:040x}" for n in range(1, 2 * COMPLETED_SWEEP_CYCLES + 1)]
    active = "a" * 40
    cycle.track(active, *completed)
    for h in completed:
        cycle.qbit.complete(h)
    cycle.poll()  # every one is looked at while active: they complete now
    cycle.qbit.asked.clear()

    for _ in range(2 * COMPLETED_SWEEP_CYCLES):
        cycle.poll()

    # One ``torrents`` call a cycle (nothing is missing): the i-th call is the i-th cycle.
    assert all(active in ids for ids in cycle.qbit.asked)
    cycles_asked = {h: [i for i, ids in enumerate(cycle.qbit.asked) if h in ids] for h in completed}
    assert {h: len(seen) for h, seen in cycles_asked.items()} == dict.fromkeys(completed, 2)
    assert all(later - first == COMPLETED_SWEEP_CYCLES for first, later in cycles_asked.values())
