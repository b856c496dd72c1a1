"""The registry against a real state file: a hash removed and added again is two downloads, the
poller's findings about a replaced one are dropped, and a restart restarts the stall timer."""

from __future__ import annotations

import json
import time

import attrs

from qbit_consumer.contract.events import Completed, Progress, Removed
from qbit_consumer.model import Download
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State

H = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
FIRST, LATER = 1_700_000_000, 1_700_000_042


def tracked(request_id: str, added_on: int | None) -> list:
    return [
        Download.added(
            hash=H,
            request_id=request_id,
            category="tv",
            name="x",
            qbit_id=H,
            added_on=added_on,
        )
    ]


def queued(queue: PublishQueue) -> list[tuple[str, str | None]]:
    return [(item.routing_key, item.request_id) for item in queue.take(limit=100)]


def identity(request_id: str) -> dict:
    return {"request_id": request_id, "hash": H, "infohash_v2": None, "name": "x", "category": "tv"}


def test_a_later_torrent_with_a_tracked_hash_reports_the_tracked_one_removed_and_replaces_it(
    tmp_path,
):
    path = tmp_path / "s.sqlite3"
    queue = PublishQueue()
    registry = Registry(State(path), queue)
    registry.track(tracked("first", FIRST))
    [first] = registry.snapshot()
    first.stage, first.last_state, first.last_progress = "completed", "stalledUP", 1.0

    assert registry.track(tracked("second", LATER)) == 1

    [download] = registry.snapshot()
    assert (download.request_id, download.stage, download.added_on) == ("second", "active", LATER)
    [(key, request_id)] = queued(queue)
    assert (key, request_id) == ("downloads.removed", "first")
    # Written in the same transaction: a restart finds both the new row and the event.
    [stored] = State(path).load_outbox()
    body = json.loads(stored.body)
    assert body["request_id"] == "first" and body["completed"] is True
    assert body["last_state"] == "stalledUP"
    assert [d.request_id for d in Registry(State(path), PublishQueue()).snapshot()] == ["second"]


def test_the_same_torrent_named_again_or_one_of_unknown_age_is_left_alone(tmp_path):
    queue = PublishQueue()
    registry = Registry(State(tmp_path / "s.sqlite3"), queue)
    registry.track(tracked("first", FIRST))
    assert registry.track(tracked("duplicate", FIRST)) == 0
    legacy = Registry(State(tmp_path / "legacy.sqlite3"), queue)
    legacy.track(tracked("old-row", None))
    assert legacy.track(tracked("second", LATER)) == 0

    assert [d.request_id for d in registry.snapshot()] == ["first"]
    assert [d.request_id for d in legacy.snapshot()] == ["old-row"]
    assert queued(queue) == []


def test_what_the_poller_found_about_a_replaced_download_is_dropped(tmp_path):
    path = tmp_path / "s.sqlite3"
    queue = PublishQueue()
    registry = Registry(State(path), queue)
    registry.track(tracked("first", FIRST))
    [seen] = registry.snapshot()  # the poller's snapshot...
    completed = attrs.evolve(seen, stage="completed")
    event = Completed(
        **identity("first"),
        size=1,
        save_path="/d",
        content_path="/d/x",
        completed_at="2026-01-01T00:00:00Z",
    )
    gone = Removed(
        **identity("first"),
        reason="external",
        files_deleted=None,
        last_state=None,
        last_progress=None,
        completed=False,
    )
    progress = Progress(
        **identity("first"),
        state="downloading",
        progress=0.5,
        downloaded=1,
        size=2,
        dlspeed=0,
        upspeed=0,
        eta=None,
        num_seeds=0,
        num_peers=0,
    ).envelope()
    registry.track(tracked("second", LATER))  # ...and meanwhile the consumer replaced it
    assert queued(queue) == [("downloads.removed", "first")]

    registry.record(updated=[completed], persist=[H], events=[event], progress=[progress])
    registry.record(removed=[seen], events=[gone])

    assert queued(queue) == []
    [download] = registry.snapshot()
    assert (download.request_id, download.stage) == ("second", "active")
    assert [e.routing_key for e in State(path).load_outbox()] == ["downloads.removed"]
    assert [d.stage for d in State(path).load_downloads()] == ["active"]


def test_findings_about_the_download_held_are_applied_and_an_unknown_added_on_is_learnt(
    tmp_path,
):
    path = tmp_path / "s.sqlite3"
    queue = PublishQueue()
    registry = Registry(State(path), queue)
    registry.track(tracked("old-row", None))
    [seen] = registry.snapshot()

    registry.record(updated=[attrs.evolve(seen, added_on=FIRST)], persist=[H])
    [learnt] = registry.snapshot()
    assert learnt.added_on == FIRST
    gone = Removed(
        **identity("old-row"),
        reason="external",
        files_deleted=None,
        last_state=None,
        last_progress=None,
        completed=False,
    )
    registry.record(removed=[learnt], events=[gone])

    assert registry.snapshot() == []
    assert queued(queue) == [("downloads.removed", "old-row")]
    assert State(path).load_downloads() == []


def test_a_restart_restarts_the_stall_timer_on_this_runs_monotonic_clock(tmp_path):
    path = tmp_path / "s.sqlite3"
    registry = Registry(State(path), PublishQueue())
    registry.track(tracked("r", FIRST))
    [download] = registry.snapshot()
    # What the previous run wrote: its own monotonic time, from a machine up for a month.
    registry.record(updated=[attrs.evolve(download, progress_changed_at=2_600_000.0)], persist=[H])

    before = time.monotonic()
    [loaded] = Registry(State(path), PublishQueue()).snapshot()
    assert before <= loaded.progress_changed_at <= time.monotonic()
