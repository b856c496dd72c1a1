"""One process per state file.

Two services on one state file would each believe its own memory and overwrite the other's
rows, and both would report the same completion. Kept apart from ``state`` because it guards
the file from outside: it is taken before the file is opened, and released after it is closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from qbit_consumer.errors import StateError
from qbit_consumer.tracking.access import first_existing, refusal


class StateLock:
    """One process per state file: an exclusive ``flock`` on ``<state file>.lock``.

    Two services on one file would each believe its own memory and overwrite the other's
    rows. The lock is taken before anything starts and held until the process ends (the
    kernel drops it even after ``kill -9``, so a stale lock file is harmless and never
    deleted: deleting it would let a third process lock a different inode). The file holds
    the owner's pid, only so that the refusal can say who holds it.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        try:
            state_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(refusal(first_existing(state_path.parent), exc)) from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            # The folder refused the new file, or the file is someone else's: name which.
            where = self.path if self.path.exists() else state_path.parent
            raise StateError(refusal(where, exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise StateError(
                f"{state_path} is in use by {owner} (another qbit-consumer run); stop it, "
                "or give this one a [state] path of its own"
            ) from None
        # The pid is only for that message: a full disk must not stop the start.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _owner(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"
