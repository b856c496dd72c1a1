"""Property: whatever a command body and its AMQP properties are, the command ends either as a
torrent with its `added` event, or in the DLQ, byte for byte, with its properties (user_id and
expiration moved into headers), a reason and one `failed` event; the service never dies.

The same for remove/pause/resume: each ends in at most one event of its own, or in the DLQ
byte for byte with one `failed` that names the command.

`make test` runs a short profile; `make fuzz` runs at least 10,000 examples of each command
(HYPOTHESIS_PROFILE=long).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbit_consumer.errors import REASONS
from tests.fixtures.rabbitmq import BrokerHelper, EventCollector, wait_until

pytestmark = pytest.mark.live

CATEGORIES = ["movies", "tv", "other"]
HEX = "0123456789abcdef"

hex40 = st.text(HEX, min_size=40, max_size=40)
btih = st.one_of(
    hex40, st.binary(min_size=20, max_size=20).map(lambda b: base64.b32encode(b).decode())
)
btmh = st.text(HEX, min_size=64, max_size=64).map(lambda h: "1220" + h)
good_magnet = st.one_of(
    btih.map(lambda h: f"magnet:?xt=urn:btih:{h}"),
    btmh.map(lambda h: f"magnet:?xt=urn:btmh:{h}"),
    st.tuples(hex40, btmh).map(
        lambda t: f"magnet:?xt.1=urn:btih:{t[0]}&xt.2=urn:btmh:{t[1]}&dn=hybrid"
    ),
    st.tuples(hex40, st.text(max_size=40)).map(
        lambda t: f"magnet:?xt=urn%3Abtih%3A{t[0]}&dn={t[1]}"
    ),
)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=50)
)
any_json = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
mutated_string = st.one_of(
    st.text(max_size=200),
    good_magnet.map(lambda m: m[:-3]),
    good_magnet.map(lambda m: m.replace("btih", "btxx")),
    good_magnet.map(lambda m: m + "\nhttp://example.com/x.torrent"),
    st.sampled_from(
        [
            "http://example.com/a.torrent",
            "/etc/passwd",
            "file:///x",
            "magnet:?",
            "MAGNET:?xt=urn:btih:" + "0" * 40,
        ]
    ),
)
# A .torrent file as a downloads.add carries it: valid ones (a random single-file v1 torrent,
# which qBittorrent takes and waits for peers), and every way one can be broken.
good_torrent = st.tuples(
    st.text("abcdefgh.-_ ", min_size=1, max_size=20), st.binary(min_size=20, max_size=20)
).map(
    lambda t: base64.b64encode(
        b"d4:infod6:lengthi1048576e4:name%d:%s12:piece lengthi1048576e6:pieces20:%see"
        % (len(t[0].encode()), t[0].encode(), t[1])
    ).decode()
)
broken_torrent = st.one_of(
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    good_torrent.map(lambda t: t[:-4]),
    good_torrent.map(lambda t: t.rstrip("=")),
    st.text(max_size=50),
)
field = {
    "magnet": st.one_of(good_magnet, good_magnet, mutated_string, any_json),
    "torrent": st.one_of(good_torrent, broken_torrent, any_json),
    "category": st.one_of(
        st.sampled_from(CATEGORIES), st.sampled_from(CATEGORIES), st.text(max_size=20), any_json
    ),
    "request_id": st.one_of(st.none(), st.text(max_size=140), any_json),
    "tags": st.one_of(st.lists(st.text(max_size=30), max_size=5), any_json),
}
command = st.fixed_dictionaries(
    {"magnet": field["magnet"], "category": field["category"]},
    optional={
        "torrent": field["torrent"],
        "request_id": field["request_id"],
        "tags": field["tags"],
        "extra": any_json,
        "magnet ": st.text(max_size=10),
    },
)


valid_tag = (
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_ é", min_size=1, max_size=20)
    .map(str.strip)
    .filter(bool)
)
valid_command = st.fixed_dictionaries(
    {"magnet": good_magnet, "category": st.sampled_from(CATEGORIES)},
    optional={
        "request_id": st.text(min_size=1, max_size=128),
        "tags": st.lists(valid_tag, max_size=4),
        "unknown field": any_json,
    },
)


# Text with lone surrogates: JSON can escape them (\\udc80) in perfectly valid UTF-8 bytes.
surrogate_text = st.text(
    st.one_of(
        st.characters(),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
    ),
    max_size=20,
)
escaped_command = st.fixed_dictionaries(
    {
        "magnet": st.one_of(good_magnet, surrogate_text.map(lambda t: "magnet:?dn=" + t)),
        "category": st.one_of(st.sampled_from(CATEGORIES), surrogate_text),
    },
    optional={
        "request_id": surrogate_text,
        "tags": st.lists(surrogate_text, max_size=3),
        "x": st.dictionaries(surrogate_text, surrogate_text, max_size=2),
    },
)


def encode(value: object, surrogates: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass" if surrogates else "strict")


valid_torrent_command = st.fixed_dictionaries(
    {"torrent": good_torrent, "category": st.sampled_from(CATEGORIES)},
    optional={"request_id": st.text(min_size=1, max_size=128), "tags": st.lists(valid_tag)},
)
torrent_command = st.fixed_dictionaries(
    {"torrent": field["torrent"], "category": field["category"]},
    optional={"request_id": field["request_id"], "extra": any_json},
)


bodies = st.one_of(
    valid_command.map(lambda v: encode(v, False)),
    valid_torrent_command.map(lambda v: encode(v, False)),
    torrent_command.map(lambda v: encode(v, False)),
    st.tuples(command, st.booleans()).map(lambda t: encode(t[0], False)),
    st.tuples(command, st.just(True)).map(
        lambda t: encode(t[0], True)
    ),  # lone surrogates: not UTF-8
    any_json.map(lambda v: encode(v, False)),
    # Every escape JSON has (\\n, \\u0000, \\", \\/...), lone surrogates among them.
    escaped_command.map(lambda v: json.dumps(v, ensure_ascii=True).encode()),
    st.binary(max_size=300),
    st.integers(1, 80_000).map(
        lambda n: json.dumps({"magnet": "magnet:?" + "a" * n, "category": "tv"}).encode()
    ),
    st.integers(1, 40_000).map(
        lambda n: b'{"magnet": ' + b"[" * n + b"]" * n + b', "category": "tv"}'
    ),
)

shortstr = st.text(max_size=30)
# Every value type pika can publish (it cannot write floats; the broker's unit tests cover a
# float header from another client).
header_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(places=2, min_value=-(10**6), max_value=10**6),
)
header_value = st.recursive(
    header_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
headers = st.dictionaries(
    st.one_of(
        # CC and BCC come only from the strategy below: RabbitMQ refuses to take a message whose
        # CC or BCC is anything but strings (406), so no such command can reach the service.
        st.text(min_size=1, max_size=12).filter(lambda key: key not in ("CC", "BCC")),
        st.sampled_from(["x-attempts", "x-delivery-count", "x-death", "x-error-reason"]),
    ),
    header_value,
    max_size=5,
) | st.fixed_dictionaries({"CC": st.lists(shortstr, max_size=2)})
properties = st.fixed_dictionaries(
    {},
    optional={
        "expiration": st.integers(60_000, 10**9).map(str),
        "priority": st.integers(0, 255),
        "headers": headers,
        "reply_to": shortstr,
        "type": shortstr,
        "app_id": shortstr,
        "content_type": shortstr,
        "content_encoding": shortstr,
        "correlation_id": shortstr,
        "timestamp": st.integers(0, 2**63 - 1),
        "delivery_mode": st.sampled_from([1, 2]),
        "cluster_id": shortstr,
    },
)
#: Properties copied as they are onto a dead letter.
KEPT = (
    "correlation_id",
    "reply_to",
    "type",
    "app_id",
    "content_type",
    "content_encoding",
    "priority",
    "timestamp",
    "cluster_id",
)
OURS = ("x-error-reason", "x-error-detail", "x-attempts", "x-failed-at", "x-command")
#: A quorum queue sets this one itself on every delivery, whatever the publisher sent.
BROKERS = ("x-delivery-count",)


def check_dead_letter_properties(
    got: pika.BasicProperties, sent: dict[str, Any], user_id: str | None
) -> None:
    for name in KEPT:
        assert getattr(got, name) == sent.get(name), name
    assert got.user_id is None and got.expiration is None
    assert got.delivery_mode == 2
    moved = got.headers
    assert moved.get("x-original-user-id") == user_id
    assert moved.get("x-original-expiration") == sent.get("expiration")
    for key, value in sent.get("headers", {}).items():
        if key == "CC":
            assert "CC" not in moved and moved["x-original-cc"] == value
        elif key not in OURS + BROKERS:
            assert moved[key] == value, key


PROFILE = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def test_every_command_is_either_added_or_dead_lettered_and_the_service_survives(
    qbit_factory, make_config, start_service, broker, names, events, other_user
):
    qbit = qbit_factory("fuzz")
    service = start_service(
        make_config(qbit, polling={"interval_seconds": 30}, categories={c: "" for c in CATEGORIES})
    )
    client = qbit.client()
    # A second RabbitMQ user: its commands carry a user_id the service may not publish.
    other = BrokerHelper(other_user)
    other_name = urlsplit(other_user).username
    outcomes = {"added": 0, "dead-lettered": 0}

    @PROFILE
    @given(body=bodies, props=properties, as_other=st.booleans())
    def one_command(body: bytes, props: dict[str, Any], as_other: bool) -> None:
        events.drain()
        seen = len(events.events)
        message_id = str(uuid.uuid4())
        user_id = other_name if as_other else None
        publisher = other if as_other else broker
        publisher.publish(
            names.command_exchange,
            "downloads.add",
            body,
            message_id=message_id,
            user_id=user_id,
            **props,
        )

        def terminal():
            new = events.drain()[seen:]
            return [e for e in new if e["event"] in ("downloads.added", "downloads.failed")]

        [outcome] = wait_until(terminal, 30, "the command's outcome")
        if outcome["event"] == "downloads.added":
            assert client.torrents_info(torrent_hashes=outcome["hash"]) or outcome["infohash_v2"]
            outcomes["added"] += 1
        else:
            assert outcome["reason"] in REASONS
            [(got, dead_body)] = broker.get_all(names.dead_letter_queue, timeout=10, count=1)
            assert got.message_id == message_id
            assert dead_body == body
            assert got.headers["x-error-reason"] == outcome["reason"]
            check_dead_letter_properties(got, props, user_id)
            outcomes["dead-lettered"] += 1
        assert service.alive

    try:
        one_command()
    finally:
        other.close()
    print(f"\nfuzz outcomes: {outcomes}")
    assert outcomes["added"] > 0 and outcomes["dead-lettered"] > 0
    assert broker.message_count(names.command_queue) == 0


CONTROL = ["downloads.remove", "downloads.pause", "downloads.resume"]
LIFECYCLE = ("added", "removed", "paused", "resumed", "failed")
v2_hex = st.text(HEX, min_size=64, max_size=64)


def control_bodies(managed: list[str]) -> st.SearchStrategy[bytes]:
    """Bodies of remove/pause/resume: often a torrent the service manages (so that commands
    take effect, repeat, and meet removed ones), else any hash form, broken ones, any JSON."""
    hash_value = st.one_of(
        st.sampled_from(managed),
        st.sampled_from(managed).map(str.upper),
        btih,
        v2_hex,
        mutated_string,
        any_json,
    )
    body = st.fixed_dictionaries(
        {"hash": hash_value},
        optional={
            "delete_files": st.one_of(st.booleans(), st.booleans(), any_json),
            "request_id": field["request_id"],
            "extra": any_json,
        },
    )
    return st.one_of(
        body.map(lambda v: encode(v, False)),
        st.tuples(body, st.just(True)).map(lambda t: encode(t[0], True)),
        any_json.map(lambda v: encode(v, False)),
        st.binary(max_size=200),
    )


@pytest.mark.parametrize("kind", CONTROL)
def test_every_control_command_ends_in_at_most_one_event_or_the_dlq_and_the_service_survives(
    qbit_factory, make_config, start_service, broker, names, amqp_url, kind
):
    qbit = qbit_factory("fuzz-control")
    # Every example adds a torrent: without progress events (thousands a cycle in a long run)
    # the collector keeps up.
    events = EventCollector(amqp_url, names.event_exchange, [f"downloads.{k}" for k in LIFECYCLE])
    # One command in hand at a time: the command's events are out before the next is taken.
    service = start_service(
        make_config(
            qbit,
            polling={"interval_seconds": 30},
            categories={c: "" for c in CATEGORIES},
            rabbitmq={"prefetch_count": 1},
        )
    )
    managed = [random_hex() for _ in range(5)]
    for infohash in managed:
        body = {"magnet": f"magnet:?xt=urn:btih:{infohash}", "category": "tv"}
        broker.publish(names.command_exchange, "downloads.add", json.dumps(body).encode())
    events.wait_for("downloads.added", count=5)
    if kind == "downloads.resume":  # something to resume
        client = qbit.client()
        client.torrents_stop(torrent_hashes=managed)
        wait_until(
            lambda: all(
                t.state == "stoppedDL" for t in client.torrents_info(torrent_hashes=managed)
            ),
            10,
            "the torrents stopped",
        )
    outcomes = {"carried out": 0, "acked, nothing to do": 0, "dead-lettered": 0}

    @PROFILE
    @given(body=control_bodies(managed), props=properties)
    def one_command(body: bytes, props: dict[str, Any]) -> None:
        events.drain()
        seen = len(events.events)
        message_id = str(uuid.uuid4())
        broker.publish(names.command_exchange, kind, body, message_id=message_id, **props)
        # Taken in order, one at a time: once a later add is done, so is this, events and all.
        sentinel = random_hex()
        later = {"magnet": f"magnet:?xt=urn:btih:{sentinel}", "category": "other"}
        broker.publish(names.command_exchange, "downloads.add", json.dumps(later).encode())
        wait_until(
            lambda: any(e.get("hash") == sentinel for e in events.drain()[seen:]),
            30,
            "the command after it",
        )
        mine = [
            e
            for e in events.drain()[seen:]
            if (
                e.get("hash") != sentinel
                and e["event"] in ("downloads.removed", "downloads.paused", "downloads.resumed")
                and e.get("reason", "command") == "command"
                and e.get("by", "command") == "command"
            )
            or e["event"] == "downloads.failed"
        ]
        assert len(mine) <= 1, mine
        if mine and mine[0]["event"] == "downloads.failed":
            assert mine[0]["reason"] in REASONS
            assert mine[0]["command"] == kind
            [(got, dead_body)] = broker.get_all(names.dead_letter_queue, timeout=10, count=1)
            assert got.message_id == message_id and dead_body == body
            check_dead_letter_properties(got, props, None)
            outcomes["dead-lettered"] += 1
        else:
            assert broker.message_count(names.dead_letter_queue) == 0
            outcomes["carried out" if mine else "acked, nothing to do"] += 1
        assert service.alive

    try:
        one_command()
    finally:
        events.close()
    print(f"\nfuzz {kind} outcomes: {outcomes}")
    assert outcomes["carried out"] > 0 and outcomes["dead-lettered"] > 0
    assert broker.message_count(names.command_queue) == 0


def random_hex() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]
