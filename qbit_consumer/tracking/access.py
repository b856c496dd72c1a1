"""Why this process may not write where the state file lives, in one line that says what to do.

On a NAS the service usually runs as the user's own uid (``--user 1000:1000``) over a folder
made by someone else; "Permission denied" alone names neither who we are nor the fix.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def first_existing(path: Path) -> Path:
    """``path``, or the nearest folder above it that exists: where a ``mkdir`` was refused."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def refusal(path: Path, exc: OSError) -> str:
    """The sentence for ``exc``, raised writing ``path``: ownership and the two fixes when
    it is a permission, the read-only mount when it is one, else the system's own words."""
    if exc.errno == errno.EROFS:
        return f"{path} is on a read-only file system: mount a writable volume or folder there"
    if exc.errno not in (errno.EACCES, errno.EPERM):
        return f"{path}: {exc.strerror}"
    uid, gid = os.getuid(), os.getgid()
    try:
        owner = path.stat()
    except OSError:
        return f"{path} is not writable by uid {uid} (gid {gid})"
    fixes = f"chown it to {uid}:{gid}"
    if owner.st_uid != 0:
        fixes += f", or run as its owner (--user {owner.st_uid}:{owner.st_gid})"
    return (
        f"{path} is not writable by uid {uid} (gid {gid}): it belongs to uid {owner.st_uid} "
        f"(gid {owner.st_gid}); {fixes}"
    )
