"""Topology: declared idempotently, conflicts reported without touching anything, and the
optional platform exchange bound exchange-to-exchange."""

from __future__ import annotations

import json

import pika.exceptions
import pytest

from qbit_consumer.broker.topology import build_topology
from qbit_consumer.commands.table import COMMANDS
from tests.fixtures.rabbitmq import EventCollector
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live


def test_topology_is_declared_twice_without_error_and_queues_are_quorum(
    qbittorrent, make_config, start_service, broker, names
):
    cfg = make_config(qbittorrent)
    assert start_service(cfg).stop() == 0
    again = start_service(cfg)  # the second start declares the same things again
    assert again.service.consumer.connected.is_set() and again.alive
    assert again.stop() == 0  # a declaration that failed would have ended a thread: exit 1
    for queue in names.queues:
        broker.message_count(queue)  # passive declare: it exists
    arguments = dict(build_topology(cfg, tuple(COMMANDS)).queues[0].arguments)
    broker.channel.queue_declare(names.command_queue, durable=True, arguments=arguments)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        broker.channel.queue_declare(
            names.command_queue, durable=True, arguments={**arguments, "x-queue-type": "classic"}
        )
    assert info.value.reply_code == 406
    assert "x-queue-type" in info.value.reply_text and "quorum" in info.value.reply_text


def test_existing_queue_with_other_arguments_stops_the_service_and_is_left_alone(
    qbittorrent, make_config, start_service, broker, names
):
    broker.channel.queue_declare(names.command_queue, durable=True)  # a classic queue, no DLX
    broker.publish("", names.command_queue, b"keep me")

    service = start_service(make_config(qbittorrent))

    assert service.stop() == 1
    failure = str(service.service.consumer.failure)
    assert f"queue '{names.command_queue}'" in failure
    assert "x-queue-type" in failure or "x-dead-letter" in failure
    assert broker.get_all(names.command_queue)[0][1] == b"keep me"


def test_classic_queue_type_declares_classic_queues(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent, rabbitmq={"queue_type": "classic"}))
    infohash = random_hash()
    broker.publish(
        names.command_exchange,
        "downloads.add",
        json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode(),
    )
    events.wait_for("downloads.added", hash=infohash)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        broker.channel.queue_declare(
            names.command_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )


def test_platform_exchange_receives_only_its_routing_keys(
    qbittorrent, make_config, start_service, broker, names, events, amqp_url
):
    cfg = make_config(
        qbittorrent,
        rabbitmq={
            "platform_exchange": names.platform_exchange,
            "platform_routing_keys": "downloads.added, downloads.failed",
        },
    )
    platform = EventCollector(amqp_url, names.platform_exchange)
    try:
        start_service(cfg)
        good = random_hash()
        broker.publish(
            names.command_exchange,
            "downloads.add",
            json.dumps({"magnet": magnet_for(good), "category": "tv"}).encode(),
        )
        broker.publish(names.command_exchange, "downloads.add", b"not json")

        events.wait_for("downloads.added", hash=good)
        events.wait_for("downloads.failed")
        platform.wait_for("downloads.added", hash=good)
        platform.wait_for("downloads.failed")
        assert {e["event"] for e in events.drain()} == {
            "downloads.received",
            "downloads.added",
            "downloads.failed",
        }
        assert sorted(e["event"] for e in platform.drain()) == [
            "downloads.added",
            "downloads.failed",
        ]
    finally:
        platform.close()


def test_a_command_queue_left_under_the_old_default_name_is_named_in_the_log_once(
    qbittorrent, make_config, start_service, caplog
):
    import attrs

    from tests.fixtures.rabbitmq import BrokerHelper, TestVhost

    with TestVhost() as url:  # a vhost of its own: "downloads.add" is a fixed name
        old = BrokerHelper(url)
        old.channel.queue_declare("downloads.add", durable=True)
        for n in range(2):
            old.publish("", "downloads.add", json.dumps({"n": n}).encode())
        cfg = make_config(qbittorrent)
        cfg = attrs.evolve(cfg, rabbitmq=attrs.evolve(cfg.rabbitmq, url=url))
        service = start_service(cfg)
        warnings = [r.getMessage() for r in caplog.records if "up to 0.1.0" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "2 messages" in warnings[0] and "CHANGELOG.md" in warnings[0]
        assert old.message_count("downloads.add") == 2  # looked at, never touched
        assert service.stop() == 0
        old.close()
