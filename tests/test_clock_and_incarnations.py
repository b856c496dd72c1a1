"""Time and identity, on the real services: a wall clock that jumps, a torrent removed and added
again under the same hash, and a qBittorrent that comes back without its torrents."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from qbit_consumer.contract.events import read_rfc3339
from qbit_consumer.tracking.lifecycle import VANISHED_WAIT_CYCLES
from qbit_consumer.tracking.poller import REMOVAL_CONFIRM_SECONDS, PollerThread
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live


def send(broker, names, magnet, request_id):
    broker.add(names.command_exchange, magnet, request_id=request_id)


def epoch(rfc3339: str) -> float:
    return read_rfc3339(rfc3339).timestamp()


class PollerHold:
    """Keeps the poller from starting a cycle while a test acts, so that what the test does
    happens between two polls: exactly, where a long poll interval would be slow and still a
    race. Also counts the polls qBittorrent answered (``answered``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._open = threading.Event()
        self._open.set()
        self._held = threading.Event()  # the poller waits at the start of a cycle
        self.answered = 0
        real = PollerThread.poll_once

        def poll_once(poller: PollerThread, qbit) -> None:
            if not self._open.is_set():
                self._held.set()
                self._open.wait()
                self._held.clear()
            real(poller, qbit)
            if poller.qbit.up:
                self.answered += 1

        monkeypatch.setattr(PollerThread, "poll_once", poll_once)

    @contextlib.contextmanager
    def between_polls(self) -> Iterator[None]:
        self._open.clear()
        try:
            wait_until(self._held.is_set, 30, "the poller to finish its cycle", 0.01)
            yield
        finally:
            self._open.set()


@pytest.fixture
def hold(monkeypatch) -> PollerHold:
    return PollerHold(monkeypatch)


def held(running, infohash: str):
    """The tracked download of ``infohash``, as the running service holds it."""
    return next(d for d in running.service.registry.snapshot() if d.hash == infohash)


def delete_by_hand(client, infohash: str) -> None:
    """Delete a torrent and wait until qBittorrent no longer lists it, then one second more:
    ``added_on`` has a one-second resolution, and a torrent added again within the same second
    cannot be told from the one it replaces."""
    client.torrents_delete(delete_files=True, torrent_hashes=infohash)
    wait_until(lambda: not client.torrents_info(torrent_hashes=infohash), 10, "the deletion")
    time.sleep(1.1)


def test_a_wall_clock_set_forward_an_hour_causes_no_stall_no_removal_and_no_long_outage(
    qbit_factory, make_config, start_service, broker, names, events, monkeypatch, hold
):
    qbit = qbit_factory("clock")
    polling = {"interval_seconds": 0.25, "failure_alert_threshold": 2, "stalled_after_seconds": 30}
    running = start_service(make_config(qbit, polling=polling))
    infohash = random_hash()  # no peer will ever have it: it waits for metadata (metaDL)
    send(broker, names, magnet_for(infohash), request_id="clock")
    events.wait_for("downloads.progress", hash=infohash)
    outage_began = time.time()
    qbit.stop()
    failed = events.wait_for("downloads.polling_failed", timeout=20)[0]

    # NTP sets the NAS clock forward an hour, for every module of the process.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    qbit.start()
    recovered = events.wait_for("downloads.polling_recovered", timeout=20)[0]
    cycles = hold.answered
    wait_until(lambda: hold.answered >= cycles + 8, 10, "8 poll cycles")

    assert events.of("downloads.stalled") == []
    assert events.of("downloads.removed") == []
    assert events.of("downloads.progress", hash=infohash)[-1]["state"] == "metaDL"
    assert recovered["outage_seconds"] < 60
    # `since` stays a wall-clock time: when the outage began, before the jump.
    assert abs(epoch(failed["since"]) - outage_began) < 10
    assert running.alive


def test_removed_by_hand_and_added_again_by_a_new_command_is_two_downloads(
    qbittorrent, seeder, make_config, start_service, broker, names, events, hold
):
    # The removal and the new command both happen between two polls, so the poller never
    # sees the torrent missing; the registry has to tell the two apart.
    running = start_service(make_config(qbittorrent, polling={"interval_seconds": 0.25}))
    payload = seeder.share(2 * 2**20)
    client = qbittorrent.client()
    send(broker, names, payload.magnet, request_id="first")
    events.wait_for("downloads.completed", hash=payload.infohash, request_id="first", timeout=60)

    with hold.between_polls():
        cycles = hold.answered
        delete_by_hand(client, payload.infohash)
        send(broker, names, payload.magnet, request_id="second")
        added = events.wait_for("downloads.added", request_id="second")[0]
        removed = events.wait_for("downloads.removed", request_id="first", timeout=5)[0]
        assert hold.answered == cycles, "the poller looked in between"

    assert added["duplicate"] is False
    assert removed["hash"] == payload.infohash
    assert removed["completed"] is True and removed["last_progress"] == 1
    completed = events.wait_for(
        "downloads.completed", request_id="second", hash=payload.infohash, timeout=60
    )[0]
    assert completed["size"] == payload.size
    time.sleep(1)
    assert len(events.of("downloads.removed", hash=payload.infohash)) == 1
    assert len(events.of("downloads.completed", request_id="first")) == 1
    assert len(events.of("downloads.completed", request_id="second")) == 1
    assert held(running, payload.infohash).request_id == "second"


def test_removed_and_added_again_by_hand_between_polls_is_reported_removed(
    qbittorrent, make_config, start_service, broker, names, events, hold
):
    running = start_service(make_config(qbittorrent, polling={"interval_seconds": 0.25}))
    infohash = random_hash()
    client = qbittorrent.client()
    send(broker, names, magnet_for(infohash), request_id="by-command")
    events.wait_for("downloads.progress", hash=infohash)

    with hold.between_polls():
        cycles = hold.answered
        delete_by_hand(client, infohash)
        client.torrents_add(urls=magnet_for(infohash))
        wait_until(lambda: client.torrents_info(torrent_hashes=infohash), 10, "the new torrent")
        assert hold.answered == cycles, "the poller looked in between"

    removed = events.wait_for("downloads.removed", hash=infohash, timeout=15)[0]
    assert removed["request_id"] == "by-command"
    assert removed["last_state"] == "metaDL" and removed["completed"] is False
    # The torrent added by hand is not ours: nothing is tracked any more, nothing more is said.
    wait_until(lambda: hold.answered >= cycles + 3, 30, "two more polls")
    assert len(running.service.registry) == 0
    assert len(events.of("downloads.removed", hash=infohash)) == 1
    assert events.events.index(removed) == max(
        i for i, e in enumerate(events.events) if e["hash"] == infohash
    )


VANISH_POLLING = {"interval_seconds": 0.5, "failure_alert_threshold": 1000}


def track_magnets(broker, names, events, count: int) -> list[str]:
    hashes = [random_hash() for _ in range(count)]
    for n, infohash in enumerate(hashes):
        send(broker, names, magnet_for(infohash), request_id=f"vanish-{n}")
    for infohash in hashes:
        events.wait_for("downloads.progress", hash=infohash)
    return hashes


def stand_in(qbit_factory, qbit):
    """Stop ``qbit`` and start an empty profile at its URL with its password: a qBittorrent
    restarted with its configuration volume missing."""
    qbit.stop()
    return qbit_factory("empty", password=qbit.password, webui_port=qbit.webui_port)


def vanishing_log(caplog, level: int) -> list[str]:
    """What the poller said about the tracked downloads as a whole, at ``level``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "qbit_consumer.tracking.poller"
        and r.levelno == level
        and "tracked downloads" in r.getMessage()
    ]


def test_qbittorrent_back_on_an_empty_profile_then_on_its_own_removes_nothing(
    qbit_factory, make_config, start_service, broker, names, events, caplog, hold
):
    # Long enough on the empty profile that a removal would have been confirmed by now.
    assert VANISH_POLLING["interval_seconds"] * (VANISHED_WAIT_CYCLES - 2) > REMOVAL_CONFIRM_SECONDS
    qbit = qbit_factory("original")
    running = start_service(make_config(qbit, polling=VANISH_POLLING))
    hashes = track_magnets(broker, names, events, 6)

    empty = stand_in(qbit_factory, qbit)
    cycles = hold.answered  # polls fail until the empty one answers
    wait_until(
        lambda: hold.answered >= cycles + VANISHED_WAIT_CYCLES - 1,
        30,
        "polls of the empty profile",
    )
    assert events.of("downloads.removed") == []
    empty.kill()
    qbit.start()

    back = time.time()
    for infohash in hashes:  # tracked again: progress goes on
        wait_until(
            lambda h=infohash: any(
                epoch(e["occurred_at"]) > back for e in events.of("downloads.progress", hash=h)
            ),
            30,
            f"progress of {infohash} after the return",
        )
    time.sleep(REMOVAL_CONFIRM_SECONDS + 1)
    assert events.of("downloads.removed") == []
    assert len(running.service.registry) == 6
    [error] = vanishing_log(caplog, logging.ERROR)
    assert "lists none of the 6 tracked downloads" in error
    [returned] = vanishing_log(caplog, logging.WARNING)
    assert "lists the tracked downloads again" in returned

    # Still watched: a real removal is reported, once.
    qbit.client().torrents_delete(delete_files=True, torrent_hashes=hashes[0])
    removed = events.wait_for("downloads.removed", hash=hashes[0], timeout=20)[0]
    assert removed["request_id"] == "vanish-0"
    time.sleep(1)
    assert [e["hash"] for e in events.of("downloads.removed")] == [hashes[0]]


def test_tracked_downloads_that_stay_gone_are_reported_removed_once_after_the_wait(
    qbit_factory, make_config, start_service, broker, names, events, caplog, hold
):
    qbit = qbit_factory("original")
    running = start_service(make_config(qbit, polling=VANISH_POLLING))
    hashes = track_magnets(broker, names, events, 5)

    stand_in(qbit_factory, qbit)
    cycles = hold.answered
    # Commands go on meanwhile, into the qBittorrent that answers, which lists what they add:
    # that says nothing about the downloads it lost.
    wait_until(lambda: hold.answered > cycles, 30, "the empty one to answer")
    newcomer = random_hash()
    send(broker, names, magnet_for(newcomer), request_id="newcomer")
    events.wait_for("downloads.added", hash=newcomer)
    wait_until(
        lambda: hold.answered >= cycles + VANISHED_WAIT_CYCLES - 1,
        30,
        "polls of the empty profile",
    )
    assert events.of("downloads.removed") == []

    events.wait_for("downloads.removed", count=5, timeout=30)
    time.sleep(REMOVAL_CONFIRM_SECONDS)
    removed = events.of("downloads.removed")
    assert sorted(e["hash"] for e in removed) == sorted(hashes)
    assert {e["request_id"] for e in removed} == {f"vanish-{n}" for n in range(5)}
    assert all(e["last_state"] == "metaDL" and e["completed"] is False for e in removed)
    assert [d.request_id for d in running.service.registry.snapshot()] == ["newcomer"]
    errors = vanishing_log(caplog, logging.ERROR)
    assert len(errors) == 2, errors
    assert "lists none of the 5 tracked downloads" in errors[0]
    assert "reporting them removed" in errors[1]
