"""The dispatch table: which command a message is, how its body is read, and how it is carried
out. Adding a command means a module in this folder, its events, its tests, and a row here:
the handler, the consumer, the topology (it binds every routing key in the table) and the one
place that settles outcomes serve every command alike.

A command's name is the routing key it was published with (CONTRACT section 3). Two ways a
message reaches the command queue carry no name there: a retry or dead-letter copy comes back
through the default exchange (its name travels in the ``x-command`` header), and a message
published straight to the queue through the default exchange is an add, as every command was
in version 1 of the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import attrs

from qbit_consumer.broker import Delivery
from qbit_consumer.commands import add, control
from qbit_consumer.commands.outcomes import COMMAND_HEADER, Outcome
from qbit_consumer.commands.tracked import BatchView
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Event
from qbit_consumer.contract.messages import MAX_BODY_BYTES, CommandContext, read_body
from qbit_consumer.contract.structure import short_repr
from qbit_consumer.errors import UNKNOWN_COMMAND, InvalidCommand
from qbit_consumer.qbit import QbitClient

C = TypeVar("C")


@attrs.frozen(kw_only=True)
class CommandKind(Generic[C]):
    """One row: a command's routing key and the three things only it knows."""

    routing_key: str
    #: The command's own fields out of a body that ``read_body`` accepted; fills the context.
    #: :raises InvalidCommand:
    parse: Callable[[dict[str, Any], CommandContext, Config], C]
    #: Its ``downloads.received`` event, published at the first attempt while qBittorrent
    #: works (None: the command has none).
    received: Callable[[C], Event] | None
    #: Carries out commands of this kind that arrived together, on the qBittorrent thread:
    #: one outcome per command, in order. The view shows the tracked downloads, with what the
    #: batch's earlier commands added.
    carry_out: Callable[[QbitClient, Sequence[C], Config, BatchView], list[Outcome]]
    #: The largest body it may have (an add may carry a .torrent file).
    body_limit: Callable[[Config], int] = lambda _cfg: MAX_BODY_BYTES


COMMANDS: Final[dict[str, CommandKind[Any]]] = {
    kind.routing_key: kind
    for kind in (
        CommandKind(
            routing_key=add.ROUTING_KEY,
            parse=add.parse,
            received=add.received,
            carry_out=add.carry_out,
            body_limit=add.body_limit,
        ),
        *(
            CommandKind(
                routing_key=key,
                parse=control.parser(key),
                received=None,
                carry_out=control.carry_out,
            )
            for key in (control.REMOVE, control.PAUSE, control.RESUME)
        ),
    )
}


def command_name(delivery: Delivery, command_queue: str) -> str:
    """The name of the command ``delivery`` carries (see the module docstring)."""
    if delivery.exchange != "":
        # Published to the command exchange: the routing key says it. An ``x-command`` header
        # there is the publisher's, not ours, and must not turn a pause into a remove.
        return delivery.routing_key
    named = delivery.headers.get(COMMAND_HEADER)
    if isinstance(named, str) and named:
        return named
    if delivery.routing_key == command_queue:
        return add.ROUTING_KEY
    return delivery.routing_key


def parse_command(
    name: str,
    body: bytes,
    *,
    correlation_id: str | None,
    message_id: str | None,
    cfg: Config,
    context: CommandContext,
) -> tuple[CommandKind[Any], Any]:
    """The command's row and its typed command.

    :raises InvalidCommand: an unknown name, or a body its command cannot carry.
    """
    kind = COMMANDS.get(name)
    data = read_body(
        body,
        correlation_id=correlation_id,
        message_id=message_id,
        context=context,
        max_bytes=kind.body_limit(cfg) if kind is not None else MAX_BODY_BYTES,
    )
    if kind is None:
        raise InvalidCommand(
            UNKNOWN_COMMAND,
            f"routing key {short_repr(name)} is not a command; the commands are "
            f"{', '.join(sorted(COMMANDS))}",
        )
    return kind, kind.parse(data, context, cfg)
