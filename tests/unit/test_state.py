from __future__ import annotations

import sqlite3

import pytest

from qbit_consumer.events import Completed
from qbit_consumer.magnet import parse_magnet
from qbit_consumer.publisher import PublishQueue
from qbit_consumer.registry import Registry, Tracked
from qbit_consumer.state import State, StateError

H = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"


def completed_event() -> Completed:
    return Completed(
        request_id="r",
        hash=H,
        infohash_v2=None,
        name="x",
        category="tv",
        size=1,
        save_path="/d",
        content_path="/d/x",
        completed_at="2026-01-01T00:00:00Z",
    )


def test_tracked_downloads_and_unconfirmed_events_survive_a_restart_with_the_same_event_id(
    tmp_path,
):
    path = tmp_path / "s.sqlite3"
    registry = Registry(State(path), PublishQueue())
    assert (
        registry.track(
            [
                (
                    parse_magnet(f"magnet:?xt=urn:btih:{H}"),
                    Tracked(request_id="r", category="tv", name="x", qbit_id=H, infohash_v2=None),
                )
            ]
        )
        == 1
    )
    download = registry.snapshot()[0]
    download.stage = "completed"
    event = completed_event()
    registry.record(updated=[download], persist=[H], events=[event])
    # ...and the process dies before the broker confirmed the event.

    queue = PublishQueue()
    again = Registry(State(path), queue)
    assert again.snapshot()[0].stage == "completed"
    assert again.snapshot()[0].request_id == "r"
    assert again.restore_outbox() == 1
    [item] = queue.take()
    assert item.event_id == event.event_id and item.body == event.to_json()

    again.event_published(item.seq)
    assert Registry(State(path), PublishQueue()).restore_outbox() == 0


def test_a_duplicate_does_not_restart_tracking(tmp_path):
    registry = Registry(State(tmp_path / "s.sqlite3"), PublishQueue())
    magnet = parse_magnet(f"magnet:?xt=urn:btih:{H}")
    assert (
        registry.track(
            [
                (
                    magnet,
                    Tracked(
                        request_id="first", category="tv", name="x", qbit_id=H, infohash_v2=None
                    ),
                )
            ]
        )
        == 1
    )
    assert (
        registry.track(
            [
                (
                    magnet,
                    Tracked(
                        request_id="second", category="tv", name="x", qbit_id=H, infohash_v2=None
                    ),
                )
            ]
        )
        == 0
    )
    assert registry.snapshot()[0].request_id == "first"


def test_a_corrupt_state_file_is_an_error_not_a_fresh_start(tmp_path):
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StateError) as info:
        State(path)
    assert str(path) in str(info.value) and "left as it is" in str(info.value)
    assert path.read_bytes().startswith(b"this is not")


def test_a_state_file_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "s.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StateError, match="newer qbit-consumer"):
        State(path)


def test_an_unwritable_state_directory_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError):
        State(blocker / "sub" / "s.sqlite3")
