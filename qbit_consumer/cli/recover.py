"""``qbit-consumer recover``: a corrupt state file moved aside and rebuilt from history."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from qbit_consumer.cli.exits import EXIT_FAILURE, EXIT_OK
from qbit_consumer.config import Config
from qbit_consumer.errors import BrokerUnavailable, HistoryUnavailable, StateCorrupt, StateError
from qbit_consumer.service import Service, absent_or_empty
from qbit_consumer.tracking.lock import StateLock
from qbit_consumer.tracking.state import State


def recover(cfg: Config) -> int:
    """Move a corrupt state file aside (never delete it) and rebuild the tracked set from the
    history stream and qBittorrent, as a start without a state file does."""
    if not cfg.history.enabled:
        print(
            "qbit-consumer: history is disabled ([history] enabled = false): there is nothing "
            "to rebuild the state file from",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    path = cfg.state.path
    try:
        lock = StateLock(path)  # a running service holds it: refuse
        try:
            if not absent_or_empty(path):
                try:
                    State(path).close()
                    print(f"{path} is fine: nothing to recover")
                    return EXIT_OK
                except StateCorrupt:
                    aside = _move_aside(path)
                    print(f"moved the corrupt state file to {aside}")
        finally:
            lock.release()
        service = Service(cfg)
        tracked = service.rebuild_now()
    except (StateError, BrokerUnavailable, HistoryUnavailable) as exc:
        print(f"qbit-consumer: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"rebuilt {path}: {tracked} tracked downloads; start the service with `run`")
    return EXIT_OK


def _move_aside(path: Path) -> Path:
    """``path`` and its SQLite companions renamed with a time stamp; the name it went to."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside
