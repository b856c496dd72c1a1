"""The audit trail's pure rules: times given to --since/--until, hashes in any form, which
events are one download's, and the summary's sums."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from qbit_consumer.contract.magnet import info_hash_keys
from qbit_consumer.history import trail

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
V1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
V2 = "32bcc50c8f5385308227700e85b55929100c875f76ea37a65c595ad930391ac4"


def event(kind: str, at: datetime, h: str = V1, **fields: object) -> tuple[int, bytes]:
    body = {"event": f"downloads.{kind}", "occurred_at": at.isoformat(), "hash": h, **fields}
    return 0, json.dumps(body).encode()


def test_since_takes_durations_and_dates():
    assert trail.parse_when("7d", NOW) == NOW - timedelta(days=7)
    assert trail.parse_when("90m", NOW) == NOW - timedelta(minutes=90)
    assert trail.parse_when("2026-11-01T08:00+00:00", NOW) == datetime(2026, 11, 1, 8, tzinfo=UTC)
    assert trail.parse_when("2026-11-01", NOW).tzinfo is not None  # local midnight
    with pytest.raises(ValueError, match="neither a duration"):
        trail.parse_when("last tuesday", NOW)


def test_a_hash_in_any_form_finds_the_download():
    assert info_hash_keys(V1.upper()) == (V1,)
    assert info_hash_keys(f" {V2.upper()}\n") == (V2, V2[:40])
    assert info_hash_keys("WRN7ZT6NKMA6SSXYKAFRUGDDIFJUNKI2") == (
        "b45bfccfcd5301e94af8500b1a1863415346a91a",
    )
    with pytest.raises(ValueError, match="not an info-hash"):
        info_hash_keys("abc")
    [hybrid] = trail.entries([event("added", NOW, h=V1, infohash_v2=V2)])
    assert trail.of_download(hybrid, frozenset(info_hash_keys(V2)), None)
    assert not trail.of_download(hybrid, frozenset(info_hash_keys("d" * 40)), None)
    assert not trail.of_download(hybrid, None, "someone")


def test_what_is_not_an_event_is_left_out():
    messages = [(0, b"not json"), (1, b'{"no": "event"}'), event("added", NOW)]
    assert [e.kind for e in trail.entries(messages)] == ["downloads.added"]


def test_the_summary_counts_kinds_failures_durations_and_unfinished_downloads():
    other = "d" * 40
    entries = list(
        trail.entries(
            [
                event("received", NOW, category="tv"),
                event("added", NOW + timedelta(seconds=1), category="tv"),
                event("completed", NOW + timedelta(minutes=10), category="tv"),
                event("received", NOW, h=other, category="movies"),
                event("added", NOW, h=other, name="stuck", category="movies"),
                event("stalled", NOW + timedelta(hours=1), h=other, category="movies"),
                event("failed", NOW, h="", reason="invalid_json"),
            ]
        )
    )
    summary = trail.summarize(entries)
    assert summary.kinds["received"] == 2 and summary.kinds["failed"] == 1
    assert summary.categories["tv"]["completed"] == 1
    assert summary.failures == {"invalid_json": 1}
    assert summary.completion_seconds == [600.0]
    assert [(h, name, last) for h, name, last, _ in summary.unfinished] == [
        (other, "stuck", "downloads.stalled")
    ]
    assert trail.percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0
