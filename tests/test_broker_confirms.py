"""Streamed publisher confirms against the real broker: many messages in flight, one wait."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from qbit_consumer.broker import Outgoing
from qbit_consumer.broker.operator import OperatorBroker
from qbit_consumer.errors import BrokerUnavailable
from tests.fixtures.rabbitmq import BrokerHelper

pytestmark = pytest.mark.live


def outgoing() -> Outgoing:
    return Outgoing(message_id=str(uuid.uuid4()), correlation_id=None, timestamp=0, persistent=True)


@pytest.fixture
def broker(amqp_url: str) -> Iterator[OperatorBroker]:
    broker = OperatorBroker(amqp_url, role="confirms test")
    broker.connect()
    yield broker
    broker.close()


@pytest.fixture
def queue(amqp_url: str) -> Iterator[str]:
    name = f"confirms-{uuid.uuid4().hex[:8]}"
    helper = BrokerHelper(amqp_url)
    helper.channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    helper.delete([name], [])
    helper.close()


def test_a_thousand_sent_messages_are_all_confirmed_by_one_settle(broker, queue, amqp_url):
    sent = [broker.send("", queue, str(i).encode(), outgoing()) for i in range(1000)]
    assert not all(s.confirmed for s in sent)  # nothing waited for yet
    broker.settle()
    assert all(s.confirmed and s.routed and not s.nacked for s in sent)
    helper = BrokerHelper(amqp_url)
    bodies = [body for _, body in helper.get_all(queue)]
    helper.close()
    assert bodies == [str(i).encode() for i in range(1000)]


def test_unroutable_messages_in_a_batch_are_told_apart_from_routed_ones(broker, queue):
    sent = []
    for i in range(200):
        target = queue if i % 3 else f"no-such-queue-{uuid.uuid4().hex[:6]}"
        sent.append((target == queue, broker.send("", target, b"x", outgoing())))
    broker.settle()
    assert [s.routed for _, s in sent] == [routed for routed, _ in sent]
    assert sum(1 for routed, _ in sent if not routed) == 67


def test_publish_to_a_missing_exchange_ends_in_broker_unavailable_not_a_hang(broker):
    missing = f"missing-{uuid.uuid4().hex[:6]}"
    broker.send(missing, "k", b"x", outgoing())
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"404 NOT_FOUND - no exchange '{missing}'"):
        broker.settle()
    # The broker's 404 ends the wait at its next round (a second at most), not a heartbeat
    # timeout later (a minute), which is all that would end a wait on a channel closed unseen.
    assert time.monotonic() - started < 2
    assert not broker.is_open


def test_settle_with_nothing_in_flight_returns_at_once(broker):
    started = time.monotonic()
    broker.settle()
    # A wait for confirms goes round in steps of a second; none is due with nothing in flight.
    assert time.monotonic() - started < 0.5
    assert broker.publish("", f"nowhere-{uuid.uuid4().hex[:6]}", b"x", outgoing()) is False
