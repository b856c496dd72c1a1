"""What declaring a topology means in AMQP calls, one step per exchange, queue and binding,
each with the words that name it in an error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from qbit_consumer.broker.topology import Topology


def declaration_steps(
    channel: BlockingChannel, topology: Topology
) -> list[tuple[str, Callable[[], Any]]]:
    steps: list[tuple[str, Callable[[], Any]]] = []
    for exchange in topology.exchanges:
        steps.append(
            (
                f"exchange '{exchange.name}'",
                lambda e=exchange: channel.exchange_declare(
                    e.name, exchange_type=e.kind, durable=True
                ),
            )
        )
    for queue in topology.queues:
        steps.append(
            (
                f"queue '{queue.name}'",
                lambda q=queue: channel.queue_declare(q.name, durable=True, arguments=q.arguments),
            )
        )
    for qb in topology.queue_bindings:
        steps.append(
            (
                f"binding of queue '{qb.queue}' to exchange '{qb.exchange}'",
                lambda b=qb: channel.queue_bind(b.queue, b.exchange, routing_key=b.routing_key),
            )
        )
    for eb in topology.exchange_bindings:
        steps.append(
            (
                f"binding of exchange '{eb.destination}' to exchange '{eb.source}'",
                lambda b=eb: channel.exchange_bind(
                    b.destination, b.source, routing_key=b.routing_key
                ),
            )
        )
    return steps
