"""What a command's outcome becomes, as data: the events it causes, and the copy that goes to
the retry or dead-letter queue instead of an ack. Pure: ``commands`` decides which outcome
applies and does the broker work (CONTRACT section 4c has the headers and reasons)."""

from __future__ import annotations

from typing import Any, Final

import attrs

from qbit_consumer.commands.add import AddResult
from qbit_consumer.config import RabbitmqConfig
from qbit_consumer.contract.events import Added, Failed, Received, rfc3339
from qbit_consumer.contract.messages import AddCommand, CommandContext

ATTEMPTS_HEADER: Final = "x-attempts"


@attrs.frozen
class Copy:
    """Where a command's message goes instead of being acked, and what follows it there."""

    queue: str
    headers: dict[str, Any]
    failed: Failed | None  # published once the copy is confirmed (dead letters only)
    log_line: str


def retry_copy(cfg: RabbitmqConfig, attempt: int, error: str) -> Copy:
    return Copy(
        cfg.retry_queue,
        {ATTEMPTS_HEADER: attempt, "x-last-error": error},
        None,
        f"attempt {attempt} of {cfg.max_attempts} failed, retrying "
        f"in {cfg.retry_delay_seconds:g} s: {error}",
    )


def dead_letter_copy(
    cfg: RabbitmqConfig, context: CommandContext, attempt: int, reason: str, detail: str
) -> Copy:
    """The DLQ copy and its ``failed`` event, with what is known of the command so far."""
    magnet = context.magnet
    return Copy(
        cfg.dead_letter_queue,
        {
            "x-error-reason": reason,
            "x-error-detail": detail,
            ATTEMPTS_HEADER: attempt,
            "x-failed-at": rfc3339(),
        },
        Failed(
            request_id=context.request_id,
            hash=magnet.hash if magnet else None,
            infohash_v2=magnet.infohash_v2 if magnet else None,
            name=magnet.display_name if magnet else None,
            category=context.category,
            reason=reason,
            detail=detail,
        ),
        f"dead-lettered a command: {reason}: {detail}",
    )


def attempts_so_far(headers: Any) -> int:
    """How often this command was tried before; garbage in the header counts as never."""
    value = headers.get(ATTEMPTS_HEADER) if hasattr(headers, "get") else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def received_event(command: AddCommand) -> Received:
    magnet = command.magnet
    return Received(
        request_id=command.request_id,
        hash=magnet.hash,
        infohash_v2=magnet.infohash_v2,
        name=magnet.display_name,
        category=command.category,
        magnet=magnet.uri,
    )


def added_event(command: AddCommand, result: AddResult) -> Added:
    magnet = command.magnet
    return Added(
        request_id=command.request_id,
        hash=magnet.hash,
        infohash_v2=magnet.infohash_v2,
        name=result.torrent.name,
        category=command.category,
        save_path=result.torrent.save_path,
        duplicate=result.duplicate,
    )
