"""What the service declares on RabbitMQ (CONTRACT section 3), as plain data.

Kept apart from ``broker`` (which performs the declarations) so the arguments can be read, tested
and documented without a broker. All declarations are idempotent: declaring the same thing twice
is a no-op, and declaring it with other arguments is a ``TopologyConflict``, never a delete.

Retries use a queue with a per-queue TTL that dead-letters back into the command queue through
the default exchange. A per-queue TTL (not per-message ``expiration``) because RabbitMQ expires
messages only at the head of a queue: mixed delays in one queue would wait behind each other.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from qbit_consumer.config import Config, HistoryConfig
from qbit_consumer.contract.events import EVENT_TYPES, Progress
from qbit_consumer.contract.status import STATUS_EVENT

#: A quorum queue dead-letters a message redelivered this many times (a crash loop on one
#: message). RabbitMQ 3.10 has no default limit, so without this a poison message that kills
#: the service would be redelivered forever.
DELIVERY_LIMIT: Final = 20
#: How often a running service declares its topology again. RabbitMQ does not tell anyone
#: when a binding is deleted (or an exchange deleted and declared again without it), so this
#: is how an exchange-to-exchange binding to the platform, or a command binding, comes back.
REDECLARE_SECONDS: Final = 30.0
#: An unroutable lifecycle event makes the service declare its topology again and send the
#: event once more, at most this often (with nobody bound at all, every event is unroutable).
REROUTE_AFTER_SECONDS: Final = 1.0


@attrs.frozen
class ExchangeSpec:
    name: str
    kind: str = "topic"


@attrs.frozen
class QueueSpec:
    name: str
    arguments: dict[str, Any]


@attrs.frozen
class QueueBinding:
    queue: str
    exchange: str
    routing_key: str


@attrs.frozen
class ExchangeBinding:
    destination: str
    source: str
    routing_key: str


@attrs.frozen(kw_only=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    queue_bindings: tuple[QueueBinding, ...]
    exchange_bindings: tuple[ExchangeBinding, ...]


def build_topology(config: Config, command_keys: tuple[str, ...]) -> Topology:
    """Everything: the command queues, bound with ``command_keys`` (every command's routing
    key, from the dispatch table), and what events need."""
    cfg = config.rabbitmq
    quorum = cfg.queue_type == "quorum"
    type_args: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    # At-least-once dead-lettering (quorum only) makes the broker keep a message until the
    # target queue confirmed it; it requires overflow=reject-publish.
    safe_dead_lettering: dict[str, Any] = (
        {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if quorum
        else {}
    )
    command = QueueSpec(
        cfg.command_queue,
        {
            **type_args,
            **({"x-delivery-limit": DELIVERY_LIMIT} if quorum else {}),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": cfg.dead_letter_queue,
            **safe_dead_lettering,
        },
    )
    retry = QueueSpec(
        cfg.retry_queue,
        {
            **type_args,
            "x-message-ttl": round(cfg.retry_delay_seconds * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": cfg.command_queue,
            **safe_dead_lettering,
        },
    )
    dead_letter = QueueSpec(cfg.dead_letter_queue, dict(type_args))
    events = build_event_topology(config)
    return Topology(
        exchanges=(ExchangeSpec(cfg.command_exchange), *events.exchanges),
        queues=(command, retry, dead_letter, *events.queues),
        queue_bindings=(
            *(QueueBinding(cfg.command_queue, cfg.command_exchange, key) for key in command_keys),
            *events.queue_bindings,
        ),
        exchange_bindings=events.exchange_bindings,
    )


def build_event_topology(config: Config) -> Topology:
    """What events need: the event exchange, the platform's binding to it, the status queue,
    and the history stream with its bindings. The publisher declares this much itself, so
    events flow (and reach the platform and the audit trail) even while the consumer is away,
    and after the exchange was deleted and came back without its bindings."""
    cfg = config.rabbitmq
    history = history_topology(config.history, cfg.event_exchange)
    status = status_queue(cfg.status_queue)
    exchanges = [ExchangeSpec(cfg.event_exchange)]
    exchange_bindings: list[ExchangeBinding] = []
    if cfg.platform_exchange:
        exchanges.append(ExchangeSpec(cfg.platform_exchange))
        exchange_bindings = [
            ExchangeBinding(cfg.platform_exchange, cfg.event_exchange, key)
            for key in cfg.platform_routing_keys
        ]
    return Topology(
        exchanges=tuple(exchanges),
        queues=(status, *history.queues),
        queue_bindings=(
            QueueBinding(cfg.status_queue, cfg.event_exchange, STATUS_EVENT),
            *history.queue_bindings,
        ),
        exchange_bindings=tuple(exchange_bindings),
    )


def status_queue(name: str) -> QueueSpec:
    """The last-value queue of ``downloads.status`` (CONTRACT section 11): one message, the
    newest, for anyone to read in the management UI or with ``qbit-consumer status``.

    A classic queue whatever ``queue_type`` says: a classic queue's length limit counts only
    ready messages, so a status that arrives while a reader holds the last one unacked is
    kept and the held one dropped once it is given back. A quorum queue counts the held one
    and drops the newer instead (seen on RabbitMQ 3.10), so a reader could leave it stale.
    """
    return QueueSpec(name, {"x-max-length": 1, "x-overflow": "drop-head"})


#: The routing keys of the audit trail: every event's but progress (which says nothing that
#: the next one does not say again). Taken from the event classes, so an event added later is
#: kept as well.
HISTORY_ROUTING_KEYS: Final = tuple(key for key in EVENT_TYPES if key != Progress.name_of_event)


def history_topology(cfg: HistoryConfig, event_exchange: str) -> Topology:
    """The stream that keeps the audit trail (CONTRACT section 8), bound to the event exchange
    so that the broker itself writes it: nothing extra on the service's publish path."""
    if not cfg.enabled:
        return Topology(exchanges=(), queues=(), queue_bindings=(), exchange_bindings=())
    stream = QueueSpec(
        cfg.stream,
        {
            "x-queue-type": "stream",
            "x-max-age": cfg.max_age,
            "x-max-length-bytes": cfg.max_bytes,
        },
    )
    return Topology(
        exchanges=(),
        queues=(stream,),
        queue_bindings=tuple(
            QueueBinding(cfg.stream, event_exchange, key) for key in HISTORY_ROUTING_KEYS
        ),
        exchange_bindings=(),
    )
