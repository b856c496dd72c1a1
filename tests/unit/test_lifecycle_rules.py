"""The lifecycle rules, case by case (qBittorrent versions and corner states)."""

from __future__ import annotations

import pytest

from qbit_consumer.lifecycle import completion_time, is_complete, observe
from qbit_consumer.qbit import Torrent
from qbit_consumer.state import Download

H = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
NOW = 1_800_000_000.0


def torrent(state="downloading", **fields) -> Torrent:
    item = {
        "hash": H,
        "infohash_v1": H,
        "name": "x",
        "state": state,
        "size": 100,
        "total_size": 100,
        "amount_left": 50,
        "completed": 50,
        "progress": 0.5,
        "completion_on": -1,
        "save_path": "/d",
        "content_path": "/d/x",
        "eta": 10,
    }
    item.update(fields)
    return Torrent.from_api(item)


def download(**fields) -> Download:
    values = dict(
        hash=H,
        qbit_id=H,
        infohash_v1=H,
        infohash_v2=None,
        request_id="r",
        category="tv",
        name="x",
        stage="active",
        last_state="downloading",
        last_progress=0.5,
        last_completed=50,
        progress_changed_at=NOW,
        added_at=NOW,
    )
    values.update(fields)
    return Download(**values)


DONE = {"amount_left": 0, "completed": 100, "progress": 1.0, "completion_on": 1_700_000_000}


@pytest.mark.parametrize("never", [-1, 0, 28_800, 43_200, 86_400, 4_294_967_295])
def test_never_completed_sentinels_of_every_version_are_not_a_completion_time(never):
    assert completion_time(torrent(completion_on=never)) is None


def test_a_magnet_waiting_for_metadata_is_not_complete_although_nothing_is_left():
    # As qBittorrent 4.5.2 reports it: size 0, amount_left 0, progress 0, completion_on 0.
    assert not is_complete(
        torrent("metaDL", size=0, amount_left=0, completed=0, progress=0, completion_on=0)
    )


@pytest.mark.parametrize("state", ["checkingUP", "checkingDL", "checkingResumeData", "moving"])
def test_checking_or_moving_is_not_complete_yet(state):
    assert not is_complete(torrent(state, **DONE))


@pytest.mark.parametrize(
    "state", ["stalledUP", "uploading", "pausedUP", "stoppedUP", "queuedUP", "forcedUP"]
)
def test_finished_states_of_4x_and_5x_are_complete(state):
    assert is_complete(torrent(state, **DONE))


def test_completion_happens_once_and_then_only_errors_are_watched():
    first = observe(download(), torrent("stalledUP", **DONE), NOW, 1800)
    assert [e.name_of_event for e in first.events] == ["downloads.completed"]
    assert first.download.stage == "completed" and first.progress is None
    assert first.events[0].completed_at == "2023-11-14T22:13:20Z"
    again = observe(first.download, torrent("stalledUP", **DONE), NOW + 5, 1800)
    assert again.events == [] and again.progress is None
    broken = observe(again.download, torrent("missingFiles", **DONE), NOW + 10, 1800)
    assert [e.name_of_event for e in broken.events] == ["downloads.errored"]


def test_progress_is_reported_every_cycle_while_incomplete_even_when_paused_or_waiting():
    for state in (
        "metaDL",
        "stalledDL",
        "pausedDL",
        "stoppedDL",
        "queuedDL",
        "checkingDL",
        "downloading",
    ):
        seen = observe(download(), torrent(state), NOW, 1800)
        assert seen.progress is not None and seen.progress.state == state


def test_infinite_eta_is_null():
    assert observe(download(), torrent(eta=8_640_000), NOW, 1800).progress.eta is None


@pytest.mark.parametrize("state", ["pausedDL", "stoppedDL"])
def test_paused_is_reported_once_per_pause(state):
    d = download()
    names = []
    for step, s in enumerate([state, state, "downloading", state, state]):
        seen = observe(d, torrent(s, completed=50 + step), NOW + step, 1800)
        names += [e.name_of_event for e in seen.events]
        d = seen.download
    assert names == ["downloads.paused", "downloads.paused"]


def test_errored_is_reported_once_per_entry_into_error():
    d = download()
    names = []
    for step, s in enumerate(["error", "error", "downloading", "missingFiles", "missingFiles"]):
        seen = observe(d, torrent(s), NOW + step, 1800)
        names += [e.name_of_event for e in seen.events]
        d = seen.download
    assert names == ["downloads.errored", "downloads.errored"]


def test_stalled_once_after_no_progress_for_the_threshold_and_again_after_new_progress():
    d = download(progress_changed_at=NOW)
    timeline = [(NOW + 10, 50), (NOW + 31, 50), (NOW + 60, 50), (NOW + 61, 60), (NOW + 100, 60)]
    names = []
    for now, done in timeline:
        seen = observe(d, torrent("stalledDL", completed=done), now, 30)
        names += [(now - NOW, e.name_of_event) for e in seen.events]
        d = seen.download
    assert names == [(31, "downloads.stalled"), (100, "downloads.stalled")]
    assert seen.events[0].stalled_seconds == 39.0


def test_time_spent_paused_does_not_count_towards_a_stall():
    d = download(progress_changed_at=NOW)
    d = observe(d, torrent("pausedDL"), NOW + 100, 30).download
    seen = observe(d, torrent("stalledDL"), NOW + 110, 30)
    assert [e.name_of_event for e in seen.events] == []


def test_a_rekeyed_hybrid_keeps_its_hash_and_learns_its_v2():
    v2 = "ab" * 32
    seen = observe(download(), torrent(hash=v2[:40], infohash_v2=v2), NOW, 1800)
    assert seen.download.qbit_id == v2[:40]
    assert seen.download.infohash_v2 == v2
    assert seen.progress.hash == H and seen.progress.infohash_v2 == v2
