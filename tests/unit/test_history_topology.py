"""What the audit trail declares, as data: a stream with the configured retention, bound to the
event exchange with every event's routing key but progress, and nothing when disabled."""

from __future__ import annotations

from qbit_consumer.broker.topology import HISTORY_ROUTING_KEYS, build_event_topology
from qbit_consumer.config import Config, HistoryConfig
from qbit_consumer.contract.events import EVENT_TYPES


def test_every_event_kind_but_progress_is_kept():
    assert set(HISTORY_ROUTING_KEYS) == set(EVENT_TYPES) - {"downloads.progress"}


def test_the_stream_carries_its_retention_and_is_bound_for_each_kept_kind():
    cfg = Config(history=HistoryConfig(stream="h", max_age="7D", max_bytes=5_000))
    topology = build_event_topology(cfg)
    [stream] = topology.queues
    assert stream.name == "h"
    assert stream.arguments == {
        "x-queue-type": "stream",
        "x-max-age": "7D",
        "x-max-length-bytes": 5_000,
    }
    bound = {(b.queue, b.exchange, b.routing_key) for b in topology.queue_bindings}
    assert bound == {("h", cfg.rabbitmq.event_exchange, key) for key in HISTORY_ROUTING_KEYS}


def test_history_disabled_declares_no_stream():
    topology = build_event_topology(Config(history=HistoryConfig(enabled=False)))
    assert topology.queues == () and topology.queue_bindings == ()
