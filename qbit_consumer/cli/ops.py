"""Operator commands: send a command, watch events, read and replay the dead-letter queue.

They talk to RabbitMQ only (never to qBittorrent) with the same config file as the service,
so a self-hoster can test and repair without writing code or opening the management UI.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from qbit_consumer.broker import Delivery, Outgoing
from qbit_consumer.broker.operator import OperatorBroker
from qbit_consumer.commands.table import parse_command
from qbit_consumer.config import Config
from qbit_consumer.contract.events import read_rfc3339
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.errors import InvalidCommand

#: Headers the service added to a dead-lettered or retried command; a replay removes them so
#: the command starts afresh (all its attempts again).
_SERVICE_HEADERS = (
    "x-error-",
    "x-attempts",
    "x-failed-at",
    "x-last-error",
    "x-death",
    "x-first-death-",
    "x-last-death-",
    "x-delivery-count",
)


def _connect(cfg: Config, role: str) -> OperatorBroker:
    broker = OperatorBroker(cfg.rabbitmq.url, role=role)
    broker.connect()
    return broker


# -- send ----------------------------------------------------------------------------------


def send(cfg: Config, routing_key: str, body: dict[str, Any]) -> str:
    """Publish one command, checked first with the service's own rules; returns its message id.

    :raises InvalidCommand: the service would dead-letter it (nothing is sent).
    """
    data = json.dumps(body).encode()
    message_id = str(uuid.uuid4())
    parse_command(
        routing_key,
        data,
        correlation_id=None,
        message_id=message_id,
        cfg=cfg,
        context=CommandContext(),
    )
    request_id = body.get("request_id")
    broker = _connect(cfg, "send")
    try:
        routed = broker.publish(
            cfg.rabbitmq.command_exchange,
            routing_key,
            data,
            Outgoing(
                message_id=message_id,
                correlation_id=request_id if isinstance(request_id, str) else None,
                timestamp=int(time.time()),
                persistent=True,
                type="command",
            ),
        )
    finally:
        broker.close()
    if not routed:
        raise RuntimeError(
            f"no queue is bound to exchange {cfg.rabbitmq.command_exchange!r} for "
            f"{routing_key!r}: start the service once, it declares them"
        )
    return message_id


# -- watch ---------------------------------------------------------------------------------


def watch(
    cfg: Config,
    binding_keys: list[str],
    out: TextIO | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Print events as they arrive, one readable line each, until ``stop()`` or Ctrl-C."""
    out = out or sys.stdout  # the stream of the moment (tests replace it)
    broker = _connect(cfg, "watch")
    try:
        for delivery in broker.listen(cfg.rabbitmq.event_exchange, binding_keys):
            if delivery is not None:
                print(format_event(delivery.body), file=out, flush=True)
            if stop():
                return
    finally:
        broker.close()


def format_event(body: bytes) -> str:
    try:
        e = json.loads(body)
    except ValueError:
        return f"(not JSON) {body[:100]!r}"
    kind, who, what = event_parts(e)
    return f"{_clock(e.get('occurred_at'))} {kind:<17} {who}  {what}".rstrip()


def event_parts(e: dict[str, Any]) -> tuple[str, str, str]:
    """An event in three columns a person reads: its kind, which download (or qBittorrent),
    and what it says, with its category and request id."""
    kind = str(e.get("event", "?")).removeprefix("downloads.")
    who = f"{e.get('name') or (e.get('hash') or '')[:12]}"
    tail = f"  [{e['category']}]" if e.get("category") else ""
    tail += f"  id={e['request_id']}" if e.get("request_id") else ""
    match kind:
        case "progress":
            what = (
                f"{_bar(e['progress'])} {e['progress'] * 100:5.1f}%  "
                f"{size(e['dlspeed'])}/s  eta {_eta(e.get('eta'))}  {e['state']}"
            )
        case "completed":
            what = f"{size(e['size'])} in {e['content_path']}"
        case "added":
            what = f"in {e['save_path']}" + (
                "  (was already in qBittorrent)" if e["duplicate"] else ""
            )
        case "failed":
            command = str(e.get("command") or "downloads.add")  # none on events up to 0.1.0
            what = f"{e['reason']}: {e['detail']}"
            if command != "downloads.add":
                what = f"{command.removeprefix('downloads.')}: {what}"
        case "removed":
            what = f"was {e['last_state']} at {(e['last_progress'] or 0) * 100:.0f}%" + (
                ", completed" if e["completed"] else ""
            )
            if e.get("reason") == "command":
                what += ", by command" + (", files deleted" if e.get("files_deleted") else "")
        case "stalled":
            what = f"no progress for {e['stalled_seconds']:.0f} s ({e['state']})"
        case "paused" | "resumed":
            what = e.get("state", "") + (" by command" if e.get("by") == "command" else "")
        case "errored":
            what = e.get("detail") or e.get("state", "")
        case "polling_failed":
            what, who = f"{e['consecutive_failures']} polls failed: {e['error']}", "qBittorrent"
        case "polling_recovered":
            what, who = f"answers again after {e['outage_seconds']:.0f} s", "qBittorrent"
        case _:
            what = ""
    return kind, who, f"{what}{tail}"


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def duration(seconds: float) -> str:
    """``42.0s``, ``3m05s``, ``5h07m``, ``3d04h``: a span a person reads at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def _clock(rfc3339: str | None) -> str:
    try:
        return read_rfc3339(str(rfc3339)).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "--:--:--"


# -- the dead-letter queue -----------------------------------------------------------------


def _each_dead_letter(broker: OperatorBroker, queue: str) -> Iterator[Delivery]:
    """Every message of the DLQ, each once, unacked (returned to the queue by the caller)."""
    while (delivery := broker.get(queue)) is not None:
        yield delivery


def dlq_list(cfg: Config, out: TextIO | None = None) -> int:
    """Print the dead-lettered commands; they stay in the queue. Returns how many."""
    out = out or sys.stdout  # the stream of the moment (tests replace it)
    broker = _connect(cfg, "dlq")
    taken: list[Delivery] = []
    try:
        for number, delivery in enumerate(
            _each_dead_letter(broker, cfg.rabbitmq.dead_letter_queue), 1
        ):
            taken.append(delivery)
            h = delivery.headers
            print(
                f"#{number}  {h.get('x-failed-at', '?')}  {h.get('x-error-reason', '?')}"
                f"  attempts={h.get('x-attempts', '?')}  id={delivery.message_id or '-'}",
                file=out,
            )
            print(f"    {h.get('x-error-detail', '(no detail)')}", file=out)
            print(f"    body: {delivery.body[:160].decode('utf-8', 'replace')}", file=out)
        if not taken:
            print(f"{cfg.rabbitmq.dead_letter_queue} is empty", file=out)
    finally:
        for delivery in taken:
            broker.put_back(delivery)
        broker.close()
    return len(taken)


def dlq_replay(cfg: Config, numbers: set[int] | None, out: TextIO | None = None) -> int:
    """Move dead-lettered commands (all, or those numbered as in ``dlq list``) back to the
    command queue, each without the headers the service added. Each copy is confirmed by the
    broker before its DLQ original is acked: an interruption can repeat a command (handled as
    a duplicate), never lose one. Returns how many were moved."""
    out = out or sys.stdout  # the stream of the moment (tests replace it)
    broker = _connect(cfg, "dlq")
    moved = 0
    keep: list[Delivery] = []
    try:
        for number, delivery in enumerate(
            _each_dead_letter(broker, cfg.rabbitmq.dead_letter_queue), 1
        ):
            if numbers is not None and number not in numbers:
                keep.append(delivery)
                continue
            if not broker.republish(
                delivery,
                cfg.rabbitmq.command_queue,
                {},
                drop_headers=lambda name: name.startswith(_SERVICE_HEADERS),
            ):
                keep.append(delivery)
                raise RuntimeError(f"queue {cfg.rabbitmq.command_queue!r} does not exist")
            broker.ack(delivery)
            moved += 1
            print(f"#{number} replayed (id={delivery.message_id or '-'})", file=out)
    finally:
        for delivery in keep:
            broker.put_back(delivery)
        broker.close()
    return moved


__all__ = [
    "InvalidCommand",
    "dlq_list",
    "dlq_replay",
    "duration",
    "event_parts",
    "format_event",
    "send",
    "size",
    "watch",
]
