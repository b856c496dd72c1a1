"""Commands no publisher should send, and brokers that refuse what we send: the service never
stops or goes blind, every command ends acked or dead-lettered exactly once, and nothing is
published for a dead letter the broker did not take."""

from __future__ import annotations

import json
import logging
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.rabbitmq import BrokerHelper, rabbitmqctl, vhost_of, wait_until
from tests.fixtures.service import magnet_for, random_hash, service_ini, spawn_service

pytestmark = pytest.mark.live


def add_body(infohash: str, **fields: object) -> bytes:
    return json.dumps({"magnet": magnet_for(infohash), "category": "tv", **fields}).encode()


@pytest.mark.parametrize(
    "body",
    [
        # A request_id with a lone surrogate escape: valid JSON, not Unicode text.
        b'{"magnet": "' + magnet_for(random_hash()).encode() + b'", "category": "tv", '
        b'"request_id": "r\\udc80"}',
        # The magnet's display name, likewise.
        b'{"magnet": "' + magnet_for(random_hash()).encode() + b'\\ud800x", "category": "tv"}',
        # In a key of an unknown field.
        b'{"magnet": "' + magnet_for(random_hash()).encode() + b'", "category": "tv", '
        b'"\\udfff": 1}',
    ],
    ids=["request_id", "magnet", "unknown-key"],
)
def test_a_lone_surrogate_escape_is_dead_lettered_and_the_service_goes_on(
    body, qbittorrent, make_config, start_service, broker, names, events
):
    service = start_service(make_config(qbittorrent))
    broker.publish(names.command_exchange, "downloads.add", body, message_id="poison")
    [(props, dead)] = broker.get_all(names.dead_letter_queue, timeout=20, count=1)
    assert dead == body
    assert props.headers["x-error-reason"] == "invalid_json"
    assert "surrogate" in props.headers["x-error-detail"]
    [failed] = events.wait_for("downloads.failed")
    assert failed["reason"] == "invalid_json"

    good = random_hash()
    broker.publish(names.command_exchange, "downloads.add", add_body(good, request_id="after"))
    events.wait_for("downloads.added", hash=good)
    assert service.alive
    assert len(events.of("downloads.failed")) == 1


def test_dead_letter_copies_are_publishable_and_durable_whatever_the_properties(
    other_user, qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent))
    publisher = BrokerHelper(other_user)
    user = urlsplit(other_user).username
    try:
        body = b'{"magnet": "not a magnet", "category": "tv"}'
        publisher.publish(
            names.command_exchange,
            "downloads.add",
            body,
            message_id="m1",
            user_id=user,
            expiration="3000",
            delivery_mode=1,
            priority=3,
            reply_to="somewhere",
            type="command",
            app_id="a platform",
            correlation_id="c1",
            headers={"CC": [names.command_queue], "x-mine": "kept", "n": 7},
        )
        good = random_hash()
        publisher.publish(
            names.command_exchange, "downloads.add", add_body(good), user_id=user, expiration="3000"
        )
    finally:
        publisher.close()
    events.wait_for("downloads.added", hash=good)
    events.wait_for("downloads.failed", request_id="c1")
    time.sleep(4)  # longer than the original's expiration: the copy must still be there
    [(props, dead)] = broker.get_all(names.dead_letter_queue, timeout=5, count=1)
    assert dead == body
    assert props.user_id is None and props.headers["x-original-user-id"] == user
    assert props.expiration is None and props.headers["x-original-expiration"] == "3000"
    assert props.delivery_mode == 2 and props.headers["x-original-delivery-mode"] == 1
    # CC would have routed a copy back into the command queue (a loop).
    assert "CC" not in props.headers and props.headers["x-original-cc"] == [names.command_queue]
    assert (props.message_id, props.correlation_id, props.priority) == ("m1", "c1", 3)
    assert (props.reply_to, props.type, props.app_id) == ("somewhere", "command", "a platform")
    assert props.headers["x-mine"] == "kept" and props.headers["n"] == 7
    assert broker.message_count(names.command_queue) == 0
    assert len(events.of("downloads.failed")) == 1


def set_policy(url: str, name: str, queue: str, definition: dict[str, object]) -> None:
    assert (
        rabbitmqctl(
            "set_policy",
            "-p",
            vhost_of(url),
            "--apply-to",
            "queues",
            name,
            f"^{queue}$",
            json.dumps(definition),
        )
        is not None
    )


def test_a_dead_letter_queue_that_refuses_holds_the_command_without_a_failed_event(
    amqp_url, qbittorrent, make_config, start_service, broker, names, events, caplog
):
    caplog.set_level(logging.INFO, logger="qbit_consumer")
    start_service(make_config(qbittorrent))
    policy = f"full-{secrets.token_hex(3)}"
    # A quorum queue refuses with reject-publish once it is over its limit, not at it.
    broker.publish("", names.dead_letter_queue, b"already there")
    broker.publish("", names.dead_letter_queue, b"already there")
    set_policy(
        amqp_url, policy, names.dead_letter_queue, {"max-length": 1, "overflow": "reject-publish"}
    )
    try:
        invalid = b'{"magnet": "magnet:?xt=urn:btih:nothex", "category": "tv"}'
        broker.publish(names.command_exchange, "downloads.add", invalid, correlation_id="held")
        good = random_hash()
        broker.publish(names.command_exchange, "downloads.add", add_body(good))
        events.wait_for("downloads.added", hash=good)  # the command behind it goes on
        time.sleep(4)  # several offers of the refused copy
        assert events.of("downloads.failed") == []
        assert broker.message_count(names.dead_letter_queue) == 2
        assert broker.message_count(names.command_queue) == 0  # held unacked, not ready
        # Someone reads the DLQ (on RabbitMQ 3.10 a quorum queue that went over its limit
        # keeps refusing until it is under it again, even once the policy is gone).
        assert len(broker.get_all(names.dead_letter_queue, timeout=5, count=2)) == 2
        [failed] = events.wait_for("downloads.failed", request_id="held", timeout=90)
        [(_, dead)] = broker.get_all(names.dead_letter_queue, timeout=5, count=1)
        assert dead == invalid
    finally:
        rabbitmqctl("clear_policy", "-p", vhost_of(amqp_url), policy)
    time.sleep(2)
    assert len(events.of("downloads.failed")) == 1
    assert failed["reason"] == "invalid_magnet"
    refusals = [r for r in caplog.records if "refuses copies" in r.getMessage()]
    assert len(refusals) == 1
    assert not [r for r in caplog.records if "lost RabbitMQ" in r.getMessage()]


def test_the_topology_comes_back_when_pieces_are_deleted_while_running(
    amqp_url, qbittorrent, make_config, start_service, broker, names, monkeypatch
):
    """An admin deletes each piece in turn; events keep reaching the platform and commands
    keep working."""
    import qbit_consumer.broker.reconnect
    import qbit_consumer.tracking.poller

    monkeypatch.setattr(qbit_consumer.broker.reconnect, "REDECLARE_SECONDS", 1.0)
    # Rounds come quicker than the one re-declaration per second that unroutable events may
    # cause; each deletion must be noticed by its first unroutable event.
    monkeypatch.setattr(qbit_consumer.broker.reconnect, "REROUTE_AFTER_SECONDS", 0.1)
    # Removals are only the means here: confirmed sooner, they make the seven rounds quicker.
    monkeypatch.setattr(qbit_consumer.tracking.poller, "REMOVAL_CONFIRM_SECONDS", 0.5)
    start_service(
        make_config(
            qbittorrent,
            rabbitmq={"platform_exchange": names.platform_exchange},
            polling={"interval_seconds": 0.25},
            # The history stream takes every lifecycle event, so a lost platform binding makes
            # no event unroutable, and only the periodic re-declaration brings it back (the
            # platform reads what it missed from the stream). Without it, the first
            # unroutable event does, which is what this test times.
            history={"enabled": "false"},
        )
    )
    # Exclusive to the helper's connection: it outlives a channel closed by a 404.
    platform_queue = broker.channel.queue_declare("", exclusive=True).method.queue
    broker.channel.queue_bind(platform_queue, names.platform_exchange, routing_key="#")
    client = qbittorrent.client()

    def platform_sees_a_download() -> None:
        infohash = random_hash()
        broker.publish(names.command_exchange, "downloads.add", add_body(infohash))

        def seen(kind: str) -> bool:
            for _props, body in broker.get_all(platform_queue):
                received.append(json.loads(body))
            return any(e["event"] == kind and e["hash"] == infohash for e in received)

        received: list[dict[str, object]] = []
        wait_until(lambda: seen("downloads.added"), 30, "added at the platform")
        client.torrents_delete(torrent_hashes=infohash, delete_files=True)
        wait_until(lambda: seen("downloads.removed"), 30, "removed at the platform")

    platform_sees_a_download()
    deletions = {
        "the event exchange, declared again by hand": lambda: (
            broker.channel.exchange_delete(names.event_exchange),
            broker.channel.exchange_declare(names.event_exchange, "topic", durable=True),
        ),
        "the platform binding": lambda: broker.channel.exchange_unbind(
            names.platform_exchange, names.event_exchange, routing_key="#"
        ),
        "the command binding": lambda: broker.channel.queue_unbind(
            names.command_queue, names.command_exchange, routing_key="downloads.add"
        ),
        "the command queue": lambda: broker.channel.queue_delete(names.command_queue),
        "the dead-letter queue": lambda: broker.channel.queue_delete(names.dead_letter_queue),
        "the retry queue": lambda: broker.channel.queue_delete(names.retry_queue),
    }
    for what, delete in deletions.items():
        delete()
        if what in ("the command binding", "the command queue"):
            # Nothing reaches a deleted queue: what is published meanwhile is the
            # publisher's loss; the service binds it again within REDECLARE_SECONDS.
            wait_until(lambda: broker.exists(names.command_queue), 15, "the command queue")
            time.sleep(2.5)
        platform_sees_a_download()
    # A command that is dead-lettered still lands in the (declared again) DLQ.
    broker.publish(names.command_exchange, "downloads.add", b"not json")
    assert broker.get_all(names.dead_letter_queue, timeout=20, count=1)


@pytest.fixture
def hanging_qbittorrent(qbittorrent) -> Iterator[HttpFaultProxy]:
    """The real qBittorrent behind a proxy that leaves every torrents/add unanswered."""
    proxy = HttpFaultProxy(qbittorrent.url)
    proxy.hang_paths.add("/api/v2/torrents/add")
    yield proxy
    proxy.close()


@pytest.fixture
def hanging_config(hanging_qbittorrent, qbittorrent, amqp_url, names, tmp_path) -> Path:
    """A service config for ``hanging_qbittorrent``, with a call timeout (60 s) longer than
    any of these tests waits."""
    return service_ini(
        tmp_path / "config.ini",
        amqp_url,
        names,
        hanging_qbittorrent.url,
        qbittorrent.password,
        qbittorrent={"timeout_seconds": 60},
    )


def adds_seen(proxy: HttpFaultProxy) -> int:
    return sum(1 for call in proxy.calls if call.startswith("/api/v2/torrents/add"))


def test_a_command_in_hand_when_the_process_died_twice_is_dead_lettered(
    hanging_qbittorrent, hanging_config, names, broker, events, tmp_path
):
    proxy, config = hanging_qbittorrent, hanging_config
    log = tmp_path / "service.log"
    infohash = random_hash()
    for death in (1, 2):
        process = spawn_service(config, log)
        if death == 1:
            broker.publish(names.command_exchange, "downloads.add", add_body(infohash))
        wait_until(lambda n=death: adds_seen(proxy) >= n, 30, f"add number {death} in hand")
        process.kill()  # a crash: nothing runs after this
        process.wait()
    proxy.hang_paths.clear()
    process = spawn_service(config, log)
    try:
        [(props, body)] = broker.get_all(names.dead_letter_queue, timeout=30, count=1)
        assert json.loads(body)["magnet"] == magnet_for(infohash)
        assert props.headers["x-error-reason"] == "retries_exhausted"
        assert "stopped unexpectedly twice" in props.headers["x-error-detail"]
        events.wait_for("downloads.failed", reason="retries_exhausted")
        assert adds_seen(proxy) == 2  # not tried a third time

        good = random_hash()
        broker.publish(names.command_exchange, "downloads.add", add_body(good))
        events.wait_for("downloads.added", hash=good)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_a_command_in_hand_when_the_process_was_killed_once_is_carried_out(
    hanging_qbittorrent, hanging_config, names, broker, events, tmp_path
):
    """The guard blames only a command that was alone in hand when the process died."""
    proxy, config = hanging_qbittorrent, hanging_config
    log = tmp_path / "service.log"
    process = spawn_service(config, log)
    infohash = random_hash()
    broker.publish(names.command_exchange, "downloads.add", add_body(infohash))
    wait_until(lambda: adds_seen(proxy) >= 1, 30, "the add in hand")
    process.kill()
    process.wait()
    proxy.hang_paths.clear()
    process = spawn_service(config, log)
    try:
        events.wait_for("downloads.added", hash=infohash)
        assert broker.message_count(names.dead_letter_queue) == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_sigterm_while_a_qbittorrent_call_hangs_exits_within_10_s_and_keeps_the_command(
    hanging_qbittorrent, hanging_config, names, broker, tmp_path
):
    proxy, config = hanging_qbittorrent, hanging_config
    process = spawn_service(config, tmp_path / "service.log")
    broker.publish(names.command_exchange, "downloads.add", add_body(random_hash()))
    wait_until(lambda: adds_seen(proxy) >= 1, 30, "the add in hand")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(60)
    took = time.monotonic() - started
    assert code == 0
    assert took < 10, f"exited {took:.1f} s after SIGTERM"
    wait_until(lambda: broker.message_count(names.command_queue) == 1, 10, "the command back")


def test_an_add_whose_added_event_a_full_queue_refuses_is_acked_only_once_it_is_taken(
    qbittorrent, make_config, start_service, broker, names, events, caplog
):
    caplog.set_level(logging.INFO, logger="qbit_consumer")
    running = start_service(make_config(qbittorrent))
    # A platform queue for `added` that takes nothing: RabbitMQ nacks every such event.
    full = f"full-{secrets.token_hex(3)}"
    channel = broker.channel
    channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    channel.queue_bind(full, names.event_exchange, "downloads.added")
    infohash = random_hash()
    try:
        broker.publish(names.command_exchange, "downloads.add", add_body(infohash))
        wait_until(
            lambda: any("refused the events" in r.getMessage() for r in caplog.records),
            30,
            "the refusal to be noticed",
        )
        time.sleep(2)  # a few more rounds of refusal
        # Not acked, so not tracked: a poll must not report a download before its `added`.
        assert infohash not in {d.hash for d in running.service.registry.snapshot()}
    finally:
        broker.channel.queue_delete(full)
    events.wait_for("downloads.progress", hash=infohash, timeout=30)  # tracked at last
    wait_until(lambda: broker.message_count(names.command_queue) == 0, 10, "the queue to drain")
    assert broker.message_count(names.dead_letter_queue) == 0
    assert events.of("downloads.added", hash=infohash)[-1]["duplicate"] is True
