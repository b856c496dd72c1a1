"""Recognising a command that kills the process, so it cannot do it forever.

A command that crashes the service before its ack is redelivered when the service is back,
and would crash it again, forever: one bad message from any publisher would take the bridge
down for good. Most such commands are caught as invalid long before (every body is parsed
defensively), but a crash is by definition what nobody foresaw, so this guard does not depend
on knowing why.

How: a redelivered command is handled alone, with a marker file (its fingerprint) written
before and removed after it is acked. If the process dies in between, the marker survives, and
the next time that same command is delivered it is dead-lettered without being looked at
again. An innocent command that only happened to be in the crashed batch is handled alone on
its redelivery and goes through. The cost is paid only by redeliveries: two small file
operations each. Quorum queues additionally dead-letter a message after ``DELIVERY_LIMIT``
deliveries (``topology``), the backstop when even the marker cannot be written.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from qbit_consumer.broker import Delivery

log = logging.getLogger(__name__)


class PoisonGuard:
    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._suspect: str | None = path.read_text(encoding="ascii").strip() or None
        except (OSError, ValueError):
            self._suspect = None
        if self._suspect is not None:
            log.warning(
                "the service stopped unexpectedly while a redelivered command was in hand; "
                "if that command comes again, it is dead-lettered"
            )

    def killed_before(self, delivery: Delivery) -> bool:
        """Whether the process died while this very command was in hand, alone (asked once:
        the caller dead-letters it)."""
        if self._suspect is None or self._suspect != fingerprint(delivery):
            return False
        self._suspect = None
        return True

    def hold(self, delivery: Delivery) -> None:
        """Mark ``delivery`` as in hand until ``release``."""
        try:
            self._path.write_text(fingerprint(delivery), encoding="ascii")
        except OSError as exc:
            log.warning("cannot write %s (%s): a crash now goes unrecognised", self._path, exc)

    def release(self) -> None:
        try:
            self._path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self._path, exc)


def fingerprint(delivery: Delivery) -> str:
    digest = hashlib.sha256(delivery.body)
    digest.update(repr(delivery.message_id).encode())
    return digest.hexdigest()


def marker_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".in-hand")
