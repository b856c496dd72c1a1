"""What the audit trail declares, as data: a stream with the configured retention, bound to the
event exchange with every event's routing key but progress (and the status), and nothing when
disabled; beside it, the status message's last-value queue."""

from __future__ import annotations

from qbit_consumer.broker.topology import HISTORY_ROUTING_KEYS, build_event_topology
from qbit_consumer.config import Config, HistoryConfig
from qbit_consumer.contract.events import EVENT_TYPES


def test_every_event_kind_but_progress_is_kept():
    assert set(HISTORY_ROUTING_KEYS) == set(EVENT_TYPES) - {"downloads.progress"}


def test_the_stream_carries_its_retention_and_is_bound_for_each_kept_kind():
    cfg = Config(history=HistoryConfig(stream="h", max_age="7D", max_bytes=5_000))
    topology = build_event_topology(cfg)
    [stream] = [q for q in topology.queues if q.name != cfg.rabbitmq.status_queue]
    assert stream.name == "h"
    assert stream.arguments == {
        "x-queue-type": "stream",
        "x-max-age": "7D",
        "x-max-length-bytes": 5_000,
    }
    bound = {(b.queue, b.exchange, b.routing_key) for b in topology.queue_bindings}
    assert {b for b in bound if b[0] == "h"} == {
        ("h", cfg.rabbitmq.event_exchange, key) for key in HISTORY_ROUTING_KEYS
    }
    assert "downloads.status" not in HISTORY_ROUTING_KEYS  # how the bridge is: not history


def test_history_disabled_declares_no_stream_and_the_status_queue_still():
    cfg = Config(history=HistoryConfig(enabled=False))
    topology = build_event_topology(cfg)
    [status] = topology.queues
    assert (status.name, status.arguments) == (
        "downloads.status",
        {"x-max-length": 1, "x-overflow": "drop-head"},  # a classic queue: see status_queue
    )
    [binding] = topology.queue_bindings
    assert (binding.queue, binding.exchange, binding.routing_key) == (
        "downloads.status",
        cfg.rabbitmq.event_exchange,
        "downloads.status",
    )
