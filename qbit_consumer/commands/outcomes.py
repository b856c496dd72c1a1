"""What a command's outcome becomes, as data: the events and downloads of a command carried
out (``Done``), and the copy that goes to the retry or dead-letter queue instead of an ack.
Pure: ``handling`` decides which applies and does the broker work (CONTRACT section 4c has the
headers and reasons)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from qbit_consumer.config import RabbitmqConfig
from qbit_consumer.contract.events import Event, Failed, rfc3339
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.errors import QbitConsumerError
from qbit_consumer.model import Download

ATTEMPTS_HEADER: Final = "x-attempts"
#: The command's name (its routing key) on a retry or dead-letter copy: the copy goes through
#: the default exchange, which replaces the routing key with the queue's name.
COMMAND_HEADER: Final = "x-command"


@attrs.frozen(kw_only=True)
class Done:
    """A command carried out: the events that report it (confirmed before the ack), what it
    changes in the tracked set (recorded before the ack: downloads to track from now on,
    tracked ones changed, tracked ones no more), what it counts as in the status message
    (``contract.status.COMMAND_OUTCOMES``), and its log line."""

    events: tuple[Event, ...]
    outcome: str
    track: tuple[Download, ...] = ()
    update: tuple[Download, ...] = ()
    end: tuple[Download, ...] = ()
    log_line: str
    log_fields: Mapping[str, Any] = attrs.field(factory=dict)


#: What carrying out one command can end in: done, or an error that says what becomes of it.
Outcome = Done | QbitConsumerError


@attrs.frozen
class Copy:
    """Where a command's message goes instead of being acked, and what follows it there."""

    queue: str
    headers: dict[str, Any]
    failed: Failed | None  # published once the copy is confirmed (dead letters only)
    log_line: str


def retry_copy(cfg: RabbitmqConfig, command: str | None, attempt: int, error: str) -> Copy:
    return Copy(
        cfg.retry_queue,
        {ATTEMPTS_HEADER: attempt, "x-last-error": error, **_named(command)},
        None,
        f"attempt {attempt} of {cfg.max_attempts} failed, retrying "
        f"in {cfg.retry_delay_seconds:g} s: {error}",
    )


def dead_letter_copy(
    cfg: RabbitmqConfig,
    context: CommandContext,
    command: str | None,
    attempt: int,
    reason: str,
    detail: str,
) -> Copy:
    """The DLQ copy and its ``failed`` event, with what is known of the command so far."""
    return Copy(
        cfg.dead_letter_queue,
        {
            "x-error-reason": reason,
            "x-error-detail": detail,
            ATTEMPTS_HEADER: attempt,
            "x-failed-at": rfc3339(),
            **_named(command),
        },
        Failed(
            request_id=context.request_id,
            hash=context.hash,
            infohash_v2=context.infohash_v2,
            name=context.name,
            category=context.category,
            reason=reason,
            detail=detail,
            command=command,
        ),
        f"dead-lettered a command: {reason}: {detail}",
    )


def attempts_so_far(headers: Any) -> int:
    """How often this command was tried before; garbage in the header counts as never."""
    value = headers.get(ATTEMPTS_HEADER) if hasattr(headers, "get") else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _named(command: str | None) -> dict[str, str]:
    return {COMMAND_HEADER: command} if command else {}
