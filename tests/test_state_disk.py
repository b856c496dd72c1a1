"""The state file's disk full, read-only or pulled from under the running service.

Real disks, not mocks: a small tmpfs that the test fills, and an ext4 image that the kernel
turns read-only the way it does after a disk error. Both need root (``mount``); without it
they are skipped with the reason. The read-only case is not ``mount -o remount,ro``: Linux
refuses that (EBUSY) while any file on the disk is open for writing, which the state file
always is; a disk error (``errors=remount-ro``) is how a disk in use really becomes read-only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbit_consumer.contract.events import Completed
from qbit_consumer.model import Download
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State, StateUnavailable
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash, run_cli

FAST = {"interval_seconds": 0.25}


def _mount(*args: str) -> None:
    try:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.skip("no `mount` command here")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a test disk here (needs root): {result.stderr.strip()}")


def _unmount(where: Path) -> None:
    """Lazily if the service still has files open there: the test is over either way."""
    if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB disk: room for the state file, and quick to fill."""
    where = tmp_path / "disk"
    where.mkdir()
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where))
    try:
        yield where
    finally:
        _unmount(where)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An ext4 disk that turns read-only on its first error, and the sysfs switch that
    causes one (what a failing sector does to a NAS's disk)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4 here")
    image = tmp_path / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(8 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    where = tmp_path / "disk"
    where.mkdir()
    _mount("-o", "loop,errors=remount-ro", str(image), str(where))
    try:
        device = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(where)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"this kernel has no {trigger} to make the disk fail")
        yield where, trigger
    finally:
        # Anything mounted over it first (the test's "repaired" disk), then the image.
        while str(where) in Path("/proc/mounts").read_text():
            _unmount(where)


def mount_options(where: Path) -> set[str]:
    [line] = [m for m in Path("/proc/mounts").read_text().splitlines() if f" {where} " in m]
    return set(line.split()[3].split(","))


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; deleting the returned file gives them back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (2**16, 2**12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(chunk))
        with pytest.raises(OSError) as info:
            os.write(fd, b"x")
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def send(broker, names, infohash: str) -> None:
    broker.add(names.command_exchange, magnet_for(infohash), "tv", f"r-{infohash[:6]}")


def healthcheck(cfg) -> subprocess.CompletedProcess[str]:
    return run_cli("healthcheck", "--config", cfg.source)


def saved(path: Path) -> dict[str, bool]:
    """What a restart would find in the state file: tracked hash -> paused."""
    state = State(path)
    try:
        assert state.load_outbox() == [], "events confirmed meanwhile are still in the outbox"
        return {d.hash: d.paused for d in state.load_downloads()}
    finally:
        state.close()


def start_tracking_two(qbittorrent, make_config, start_service, broker, names, events, disk):
    cfg = make_config(qbittorrent, polling=FAST, state={"path": disk / "state.sqlite3"})
    service = start_service(cfg)
    first, second = random_hash(), random_hash()
    send(broker, names, first)
    send(broker, names, second)
    events.wait_for("downloads.added", hash=first)
    events.wait_for("downloads.added", hash=second)
    wait_until(lambda: len(service.service.registry) == 2, 10, "both to be tracked")
    return cfg, service, first, second


def pause_and_see_it_published(qbittorrent, events, infohash: str) -> None:
    """A lifecycle change: the poller must record it (and fail to write it) and publish it."""
    qbittorrent.client().torrents_pause(torrent_hashes=infohash)
    events.wait_for("downloads.paused", hash=infohash, timeout=15)


def unhealthy_because_of(cfg, words: str) -> str:
    result = wait_until(
        lambda: (r := healthcheck(cfg)).returncode == 1 and words in r.stdout and r,
        10,
        f"the healthcheck to fail with {words!r}",
    )
    return result.stdout


@pytest.mark.live
def test_a_full_state_disk_pauses_the_state_file_not_the_service(
    tmpfs, qbittorrent, make_config, start_service, broker, names, events, caplog
):
    caplog.set_level(logging.INFO, logger="qbit_consumer")
    cfg, service, first, second = start_tracking_two(
        qbittorrent, make_config, start_service, broker, names, events, tmpfs
    )
    registry = service.service.registry
    filler = fill(tmpfs)

    pause_and_see_it_published(qbittorrent, events, first)  # from memory
    problem = wait_until(lambda: registry.problem, 5, "the full disk to be noticed")
    assert problem.reason == "database or disk is full"
    assert not registry.writable.is_set()
    report = unhealthy_because_of(cfg, f"the state file {cfg.state.path} cannot be written")
    assert "database or disk is full; commands wait in their queue" in report
    pause_and_see_it_published(qbittorrent, events, second)  # still from memory
    assert service.alive
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once per episode
    assert str(cfg.state.path) in errors[0].getMessage()

    filler.unlink()
    wait_until(lambda: registry.problem is None, 10, "the state file to be written again")
    assert registry.writable.is_set()
    wait_until(lambda: healthcheck(cfg).returncode == 0, 10, "the healthcheck to pass again")
    assert any("can be written again" in r.getMessage() for r in caplog.records)
    assert service.stop() == 0
    assert saved(cfg.state.path) == {first: True, second: True}


@pytest.mark.live
def test_a_command_waits_in_its_queue_while_the_state_disk_is_full(
    tmpfs, qbittorrent, make_config, start_service, broker, names, events
):
    cfg, service, first, _ = start_tracking_two(
        qbittorrent, make_config, start_service, broker, names, events, tmpfs
    )
    filler = fill(tmpfs)
    pause_and_see_it_published(qbittorrent, events, first)
    wait_until(lambda: service.service.registry.problem, 5, "the full disk to be noticed")

    waiting = random_hash()
    send(broker, names, waiting)
    wait_until(lambda: broker.message_count(names.command_queue) == 1, 5, "it to be queued")
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: events.of("downloads.received", hash=waiting), 3, "it to be taken")
    assert broker.message_count(names.command_queue) == 1
    assert broker.message_count(names.dead_letter_queue) == 0
    assert service.alive

    filler.unlink()
    events.wait_for("downloads.added", hash=waiting, timeout=20)
    wait_until(lambda: len(service.service.registry) == 3, 10, "it to be tracked")
    assert service.stop() == 0
    assert waiting in saved(cfg.state.path)


@pytest.mark.live
def test_a_state_disk_turned_read_only_and_then_replaced(
    ext4, qbittorrent, make_config, start_service, broker, names, events, caplog
):
    disk, trigger = ext4
    caplog.set_level(logging.INFO, logger="qbit_consumer")
    cfg, service, first, second = start_tracking_two(
        qbittorrent, make_config, start_service, broker, names, events, disk
    )
    registry = service.service.registry
    trigger.write_text("test\n")  # the kernel makes it read-only, files open or not
    assert {"ro", "emergency_ro"} & mount_options(disk)

    pause_and_see_it_published(qbittorrent, events, first)
    wait_until(lambda: registry.problem, 5, "the read-only disk to be noticed")
    unhealthy_because_of(cfg, f"the state file {cfg.state.path} cannot be written")
    assert service.alive

    # The self-hoster mounts a good disk where the broken one was: the path now leads to no
    # file at all, and the service writes the whole state file there from memory.
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk))
    wait_until(lambda: registry.problem is None, 10, "the state file to be written again")
    wait_until(lambda: healthcheck(cfg).returncode == 0, 10, "the healthcheck to pass again")
    assert service.stop() == 0
    assert saved(cfg.state.path) == {first: True, second: False}


@pytest.mark.live
def test_a_state_file_deleted_while_running_is_written_again_and_survives_a_restart(
    tmp_path, qbittorrent, make_config, start_service, broker, names, events, caplog
):
    caplog.set_level(logging.WARNING, logger="qbit_consumer")
    cfg, service, doomed, kept = start_tracking_two(
        qbittorrent, make_config, start_service, broker, names, events, tmp_path
    )
    path = cfg.state.path
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink()

    wait_until(
        lambda: any("deleted or replaced" in r.getMessage() for r in caplog.records),
        10,
        "the deletion to be noticed",
    )
    assert service.stop() == 0
    assert saved(path) == {doomed: False, kept: False}

    # Removed in qBittorrent while the service is stopped: only a state file that still
    # tracks it lets the next run report it.
    qbittorrent.client().torrents_delete(delete_files=True, torrent_hashes=doomed)
    start_service(cfg)
    removed = events.wait_for("downloads.removed", hash=doomed, timeout=20)[0]
    assert removed["request_id"] == f"r-{doomed[:6]}"


def completed(infohash: str) -> Completed:
    return Completed(
        request_id="r",
        hash=infohash,
        infohash_v2=None,
        name="x",
        category="tv",
        size=1,
        save_path="/d",
        content_path="/d/x",
        completed_at="2026-01-01T00:00:00Z",
    )


def held(registry: Registry, infohash: str) -> Download | None:
    return next((d for d in registry.snapshot() if d.hash == infohash), None)


def test_the_registry_writes_what_it_held_once_the_disk_has_room_again(tmpfs):
    """Below the service: a commit that fails changes memory but loses nothing, ``track``
    refuses without changing anything, and the rewrite keeps each event's number."""
    path = tmpfs / "state.sqlite3"
    queue = PublishQueue()
    registry = Registry(State(path), queue)
    tracked, refused = random_hash(), random_hash()

    def add(infohash: str) -> int:
        download = Download.added(
            hash=infohash, request_id="r", category="tv", name="x", qbit_id=infohash
        )
        return registry.track([download])

    assert add(tracked) == 1
    filler = fill(tmpfs)
    download = held(registry, tracked)
    download.stage = "completed"
    registry.record(
        updated=[download], persist=[tracked], events=[completed(tracked), completed(tracked)]
    )
    assert registry.problem is not None and held(registry, tracked).stage == "completed"
    waiting, published = queue.take(2)
    registry.event_published(published.seq)  # must not raise
    with pytest.raises(StateUnavailable):
        add(refused)
    assert held(registry, refused) is None
    registry.maintain()
    assert registry.problem is not None  # still full

    filler.unlink()
    registry.maintain()
    assert registry.problem is None
    state = State(path)
    assert [(e.seq, e.event_id) for e in state.load_outbox()] == [(waiting.seq, waiting.event_id)]
    assert [(d.hash, d.stage) for d in state.load_downloads()] == [(tracked, "completed")]
    state.close()
    registry.event_published(waiting.seq)
    state = State(path)
    assert state.load_outbox() == []
    state.close()
