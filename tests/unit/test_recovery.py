"""Rebuilding the tracked set from the trail: added and not removed since, with what was
already reported marked as reported; managed torrents history does not know come on top."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from qbit_consumer.history.recovery import rebuild, unknown_to_history
from qbit_consumer.history.trail import entries
from tests.stubs import torrent

T0 = datetime(2026, 11, 30, tzinfo=UTC)
A, B, C = "a" * 40, "b" * 40, "c" * 40
V2 = "32bcc50c8f5385308227700e85b55929100c875f76ea37a65c595ad930391ac4"


def trail(*events: tuple[str, str, dict]):
    return entries(
        (
            n,
            json.dumps(
                {
                    "event": f"downloads.{kind}",
                    "occurred_at": (T0 + timedelta(seconds=n)).isoformat(),
                    "hash": h,
                    **fields,
                }
            ).encode(),
        )
        for n, (kind, h, fields) in enumerate(events)
    )


def test_added_and_not_removed_are_tracked_with_what_was_reported():
    rebuilt = rebuild(
        trail(
            ("received", A, {"request_id": "ra"}),
            ("added", A, {"request_id": "ra", "category": "tv", "name": "a"}),
            ("completed", A, {}),
            ("added", B, {"request_id": "rb", "category": "movies"}),
            ("paused", B, {}),
            ("stalled", B, {}),
            ("added", C, {"request_id": "rc"}),
            ("removed", C, {}),
            ("failed", "", {"reason": "invalid_json"}),
        )
    )
    by_hash = {d.hash: d for d in rebuilt}
    assert set(by_hash) == {A, B}
    assert (by_hash[A].stage, by_hash[A].request_id, by_hash[A].category) == (
        "completed",
        "ra",
        "tv",
    )
    assert by_hash[B].stage == "active" and by_hash[B].paused and by_hash[B].stalled
    assert by_hash[B].request_id == "rb"


def test_a_pause_that_history_shows_resumed_is_not_a_pause_any_more():
    rebuilt = rebuild(
        trail(
            ("added", A, {}),
            ("paused", A, {"by": "external"}),
            ("resumed", A, {"by": "external"}),
            ("added", B, {}),
            ("paused", B, {"by": "command"}),
        )
    )
    assert {d.hash: d.paused for d in rebuilt} == {A: False, B: True}


def test_a_v2_download_is_looked_for_under_its_v2_id():
    [download] = rebuild(trail(("added", V2[:40], {"infohash_v2": V2})))
    assert download.qbit_id == V2[:40] and download.infohash_v1 is None
    assert V2 in download.keys


def test_a_download_added_again_after_its_removal_is_tracked_once_more():
    rebuilt = rebuild(
        trail(
            ("added", A, {"request_id": "1"}), ("removed", A, {}), ("added", A, {"request_id": "2"})
        )
    )
    assert [(d.hash, d.request_id) for d in rebuilt] == [(A, "2")]


def test_managed_torrents_that_history_does_not_know_are_added_without_a_request_id():
    known = rebuild(trail(("added", A, {"request_id": "ra"})))
    extra = unknown_to_history([torrent(A), torrent(B, name="b")], known)
    assert [(d.hash, d.request_id, d.name) for d in extra] == [(B, None, "b")]
