"""Commands that can never succeed: each goes to the DLQ untouched, with a reason, and a
downloads.failed event; the service keeps running."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live

H = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
GOOD = magnet_for(H)

BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty body", b"", "invalid_json"),
    ("not json", b"hello world", "invalid_json"),
    ("truncated json", b'{"magnet": "magnet:?xt=urn:btih:', "invalid_json"),
    ("invalid utf-8", b'{"magnet": "\xff\xfe", "category": "tv"}', "invalid_json"),
    ("latin-1 bytes", '{"magnet": "café", "category": "tv"}'.encode("latin-1"), "invalid_json"),
    ("json array", b'["magnet:?xt=urn:btih:' + H.encode() + b'"]', "invalid_message"),
    ("json string", b'"magnet:?xt=urn:btih:' + H.encode() + b'"', "invalid_message"),
    ("json null", b"null", "invalid_message"),
    ("json number", b"42", "invalid_message"),
    ("missing magnet", json.dumps({"category": "tv"}).encode(), "invalid_message"),
    ("missing category", json.dumps({"magnet": GOOD}).encode(), "invalid_message"),
    (
        "magnet is a number",
        json.dumps({"magnet": 12345, "category": "tv"}).encode(),
        "invalid_message",
    ),
    (
        "magnet is a list",
        json.dumps({"magnet": [GOOD], "category": "tv"}).encode(),
        "invalid_message",
    ),
    (
        "category is an object",
        json.dumps({"magnet": GOOD, "category": {"x": 1}}).encode(),
        "invalid_message",
    ),
    (
        "tags is a string",
        json.dumps({"magnet": GOOD, "category": "tv", "tags": "a,b"}).encode(),
        "invalid_message",
    ),
    (
        "tag with a comma",
        json.dumps({"magnet": GOOD, "category": "tv", "tags": ["a,b"]}).encode(),
        "invalid_message",
    ),
    (
        "request_id too long",
        json.dumps({"magnet": GOOD, "category": "tv", "request_id": "x" * 129}).encode(),
        "invalid_message",
    ),
    (
        "request_id a number",
        json.dumps({"magnet": GOOD, "category": "tv", "request_id": 7}).encode(),
        "invalid_message",
    ),
    (
        "unknown category",
        json.dumps({"magnet": GOOD, "category": "porn"}).encode(),
        "invalid_category",
    ),
    (
        "category wrong case",
        json.dumps({"magnet": GOOD, "category": "TV"}).encode(),
        "invalid_category",
    ),
    (
        "http url",
        json.dumps({"magnet": "http://example.com/x.torrent", "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "file path",
        json.dumps({"magnet": "/etc/passwd", "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "file url",
        json.dumps({"magnet": "file:///etc/passwd", "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "magnet smuggling a url on a new line",
        json.dumps({"magnet": GOOD + "\nhttp://example.com/x.torrent", "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "magnet without xt",
        json.dumps({"magnet": "magnet:?dn=nothing", "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "btih too short",
        json.dumps({"magnet": "magnet:?xt=urn:btih:abc123", "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "btih not hex",
        json.dumps({"magnet": "magnet:?xt=urn:btih:" + "g" * 40, "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "btmh wrong multihash",
        json.dumps({"magnet": "magnet:?xt=urn:btmh:1114" + "a" * 64, "category": "tv"}).encode(),
        "invalid_magnet",
    ),
    (
        "two different btih",
        json.dumps(
            {"magnet": f"magnet:?xt.1=urn:btih:{H}&xt.2=urn:btih:{'b' * 40}", "category": "tv"}
        ).encode(),
        "invalid_magnet",
    ),
    (
        "oversized",
        json.dumps({"magnet": GOOD, "category": "tv", "pad": "x" * 70_000}).encode(),
        "too_large",
    ),
    (
        "deeply nested",
        b'{"magnet": ' + b"[" * 20_000 + b"]" * 20_000 + b', "category": "tv"}',
        "invalid_json",
    ),
]


def test_bad_bodies_are_dead_lettered_byte_for_byte_with_reason_and_failed_event(
    qbittorrent, make_config, start_service, broker, names, events
):
    service = start_service(make_config(qbittorrent))
    for index, (label, body, _reason) in enumerate(BAD_BODIES):
        broker.publish(
            names.command_exchange,
            "downloads.add",
            body,
            message_id=f"bad-{index}",
            content_type="application/json",
            headers={"x-origin": label},
            delivery_mode=2,
            priority=3,
        )

    dead = broker.get_all(names.dead_letter_queue, timeout=30, count=len(BAD_BODIES))
    assert len(dead) == len(BAD_BODIES)
    by_id = {props.message_id: (props, body) for props, body in dead}
    for index, (label, body, reason) in enumerate(BAD_BODIES):
        props, dead_body = by_id[f"bad-{index}"]
        assert dead_body == body, label
        assert props.headers["x-error-reason"] == reason, (label, props.headers["x-error-detail"])
        assert props.headers["x-error-detail"], label
        assert props.headers["x-attempts"] == 1
        assert props.headers["x-failed-at"].endswith("Z")
        assert props.headers["x-origin"] == label
        assert (props.content_type, props.delivery_mode, props.priority) == (
            "application/json",
            2,
            3,
        )

    failed = events.wait_for("downloads.failed", count=len(BAD_BODIES))
    assert sorted(e["reason"] for e in failed) == sorted(r for _, _, r in BAD_BODIES)
    assert {e["request_id"] for e in failed} == {f"bad-{i}" for i in range(len(BAD_BODIES))}
    unknown_category = next(e for e in failed if e["request_id"] == "bad-18")
    assert unknown_category["hash"] == H  # the magnet was fine, so the hash is known
    assert unknown_category["category"] is None
    assert next(e for e in failed if e["request_id"] == "bad-1")["hash"] is None
    assert qbittorrent.client().torrents_info(torrent_hashes=H) == []

    # ...and it is still running: a good command goes through.
    assert service.alive
    good = random_hash()
    broker.publish(
        names.command_exchange,
        "downloads.add",
        json.dumps({"magnet": magnet_for(good), "category": "tv"}).encode(),
    )
    events.wait_for("downloads.added", hash=good)
    wait_until(lambda: broker.message_count(names.command_queue) == 0, 10, "the queue to drain")


def test_a_routing_key_that_is_no_command_is_dead_lettered_unknown_command(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent))
    # A binding someone added by hand lets another routing key reach the command queue.
    broker.channel.queue_bind(names.command_queue, names.command_exchange, "downloads.explode")
    body = json.dumps({"magnet": GOOD, "category": "tv", "request_id": "boom"}).encode()
    broker.publish(names.command_exchange, "downloads.explode", body)

    [(props, dead_body)] = broker.get_all(names.dead_letter_queue, timeout=30, count=1)
    assert dead_body == body
    assert props.headers["x-error-reason"] == "unknown_command"
    assert "'downloads.explode'" in props.headers["x-error-detail"]
    assert props.headers["x-command"] == "downloads.explode"
    [failed] = events.wait_for("downloads.failed", request_id="boom")
    assert failed["reason"] == "unknown_command"
    assert events.of("downloads.received") == []
    assert qbittorrent.client().torrents_info(torrent_hashes=H) == []


def test_a_command_published_straight_to_its_queue_is_an_add(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent))
    infohash = random_hash()
    body = json.dumps({"magnet": magnet_for(infohash), "category": "tv"}).encode()
    broker.publish("", names.command_queue, body)  # the default exchange: no command name
    events.wait_for("downloads.added", hash=infohash)
    assert broker.message_count(names.dead_letter_queue) == 0
