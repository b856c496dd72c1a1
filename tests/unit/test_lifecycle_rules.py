"""The lifecycle rules, case by case (qBittorrent versions and corner states)."""

from __future__ import annotations

import pytest

from qbit_consumer.model import Torrent
from qbit_consumer.tracking.lifecycle import (
    VANISHED_WAIT_CYCLES,
    Vanish,
    Vanishing,
    completion_time,
    is_complete,
    observe,
    replaced,
)
from qbit_consumer.tracking.state import Download

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


def test_completion_happens_once_and_then_only_errors_and_pauses_are_watched():
    first = observe(download(), torrent("stalledUP", **DONE), NOW, 1800)
    assert [e.name_of_event for e in first.events] == ["downloads.completed"]
    assert first.download.stage == "completed" and first.progress is None
    assert first.events[0].completed_at == "2023-11-14T22:13:20.000Z"
    again = observe(first.download, torrent("stalledUP", **DONE), NOW + 5, 1800)
    assert again.events == [] and again.progress is None
    broken = observe(again.download, torrent("missingFiles", **DONE), NOW + 10, 1800)
    assert [e.name_of_event for e in broken.events] == ["downloads.errored"]
    stopped = observe(broken.download, torrent("stoppedUP", **DONE), NOW + 15, 1800)
    assert [e.name_of_event for e in stopped.events] == ["downloads.paused"]
    assert stopped.progress is None


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
def test_paused_and_resumed_are_reported_once_each_and_say_nobody_here_did_it(state):
    d = download()
    seen_events = []
    for step, s in enumerate([state, state, "downloading", "downloading", state, state]):
        seen = observe(d, torrent(s, completed=50 + step), NOW + step, 1800)
        seen_events += seen.events
        d = seen.download
    assert [e.name_of_event for e in seen_events] == [
        "downloads.paused",
        "downloads.resumed",
        "downloads.paused",
    ]
    assert {e.by for e in seen_events} == {"external"}
    assert seen_events[1].state == "downloading"


@pytest.mark.parametrize("state", ["pausedUP", "stoppedUP"])
def test_a_completed_download_stopped_from_seeding_is_paused_and_resumed_once_each(state):
    d = observe(download(), torrent("uploading", **DONE), NOW, 1800).download
    names = []
    for step, s in enumerate([state, state, "uploading", state, state]):
        seen = observe(d, torrent(s, **DONE), NOW + step, 1800)
        names += [e.name_of_event for e in seen.events]
        assert seen.progress is None
        d = seen.download
    assert names == ["downloads.paused", "downloads.resumed", "downloads.paused"]
    assert d.stage == "completed"


def test_completed_and_stopped_in_the_same_cycle_gives_completed_then_paused():
    seen = observe(download(), torrent("stoppedUP", **DONE), NOW, 1800)
    assert [e.name_of_event for e in seen.events] == ["downloads.completed", "downloads.paused"]
    assert seen.events[1].state == "stoppedUP" and seen.events[1].progress == 1.0


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
    assert [e.name_of_event for e in seen.events] == ["downloads.resumed"]  # and no stall


def test_a_rekeyed_hybrid_keeps_its_hash_and_learns_its_v2():
    v2 = "ab" * 32
    seen = observe(download(), torrent(hash=v2[:40], infohash_v2=v2), NOW, 1800)
    assert seen.download.qbit_id == v2[:40]
    assert seen.download.infohash_v2 == v2
    assert seen.progress.hash == H and seen.progress.infohash_v2 == v2


@pytest.mark.parametrize(
    ("known", "seen", "later"),
    [
        (1_700_000_000, 1_700_000_005, True),  # removed and added again
        (1_700_000_000, 1_700_000_000, False),  # the same torrent
        (None, 1_700_000_005, False),  # a row from an older state file: learnt, not judged
        (1_700_000_000, 0, False),  # qBittorrent gave no added_on
        (None, 0, False),
    ],
)
def test_a_torrent_is_a_later_one_only_when_both_added_on_are_known_and_differ(known, seen, later):
    assert replaced(known, seen) is later


def test_an_unknown_added_on_is_learnt_and_a_known_one_kept():
    learnt = observe(download(added_on=None), torrent(added_on=1_700_000_005), NOW, 1800)
    assert learnt.download.added_on == 1_700_000_005
    kept = observe(download(added_on=1_700_000_000), torrent(added_on=0), NOW, 1800)
    assert kept.download.added_on == 1_700_000_000


FIVE = {f"{n:040x}" for n in range(5)}
SIX = {f"{n:040x}" for n in range(6)}
NONE: set[str] = set()


def run(watch: Vanishing, cycles: list[tuple[set[str], set[str]] | None]) -> list[Vanish | None]:
    """Each cycle is (tracked, listed), or None for a failed poll."""
    verdicts: list[Vanish | None] = []
    for cycle in cycles:
        if cycle is None:
            watch.failed()
            verdicts.append(None)
        else:
            verdicts.append(watch.listing(*cycle))
    return verdicts


def test_removals_wait_while_qbittorrent_lists_none_of_the_tracked_downloads_then_go_ahead():
    verdicts = run(Vanishing(), [(FIVE, NONE)] * (VANISHED_WAIT_CYCLES + 3))
    assert verdicts == [
        Vanish.NOTICED,
        *[Vanish.WAITING] * (VANISHED_WAIT_CYCLES - 1),
        Vanish.CONFIRMED,
        Vanish.NO,
        Vanish.NO,
    ]
    assert [v.holds for v in verdicts] == [True] * VANISHED_WAIT_CYCLES + [False] * 3


def test_a_few_downloads_gone_together_or_some_still_listed_are_ordinary_removals():
    four = set(list(FIVE)[:4])
    cycles = [(four, NONE), (four, NONE), (FIVE, four), (SIX, {min(SIX)})]
    assert run(Vanishing(), cycles) == [Vanish.NO] * 4


def test_downloads_listed_again_during_the_wait_are_never_reported():
    watch = Vanishing()
    assert run(watch, [(SIX, NONE), (SIX, NONE), (SIX, SIX), (SIX, SIX)]) == [
        Vanish.NOTICED,
        Vanish.WAITING,
        Vanish.RETURNED,
        Vanish.NO,
    ]
    assert run(watch, [(SIX, NONE)]) == [Vanish.NOTICED]  # a new episode waits all over again


def test_downloads_added_to_the_empty_profile_during_the_wait_do_not_end_it():
    # The consumer goes on adding to the qBittorrent that answers; it lists those.
    new = {"f" * 40}
    verdicts = run(Vanishing(), [(FIVE, NONE)] + [(FIVE | new, new)] * VANISHED_WAIT_CYCLES)
    assert verdicts == [Vanish.NOTICED, *[Vanish.WAITING] * 9, Vanish.CONFIRMED]
    back = run(Vanishing(), [(FIVE, NONE), (FIVE | new, new), (FIVE | new, FIVE | new)])
    assert back == [Vanish.NOTICED, Vanish.WAITING, Vanish.RETURNED]


def test_a_failed_poll_starts_the_wait_again_and_the_return_after_it_is_still_noticed():
    half = VANISHED_WAIT_CYCLES // 2
    gone = [(FIVE, NONE)] * half
    verdicts = run(Vanishing(), [*gone, None, *gone, None, (FIVE, FIVE)])
    assert Vanish.CONFIRMED not in verdicts
    assert verdicts[half + 1] is Vanish.NOTICED
    assert verdicts[-1] is Vanish.RETURNED
    stays_gone = run(Vanishing(), [*gone, None] + [(FIVE, NONE)] * VANISHED_WAIT_CYCLES)
    assert Vanish.CONFIRMED not in stays_gone  # counted from the failed poll on
    assert stays_gone[-1] is Vanish.WAITING
