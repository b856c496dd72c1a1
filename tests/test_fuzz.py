"""Property: whatever a command body is, it ends either as a torrent with its `added` event,
or in the DLQ, byte for byte, with a reason and a `failed` event; the service never dies.

`make test` runs a short profile; `make fuzz` runs at least 10,000 examples
(HYPOTHESIS_PROFILE=long).
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbit_consumer.errors import REASONS
from tests.fixtures.rabbitmq import wait_until

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
field = {
    "magnet": st.one_of(good_magnet, good_magnet, mutated_string, any_json),
    "category": st.one_of(
        st.sampled_from(CATEGORIES), st.sampled_from(CATEGORIES), st.text(max_size=20), any_json
    ),
    "request_id": st.one_of(st.none(), st.text(max_size=140), any_json),
    "tags": st.one_of(st.lists(st.text(max_size=30), max_size=5), any_json),
}
command = st.fixed_dictionaries(
    {"magnet": field["magnet"], "category": field["category"]},
    optional={
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


def encode(value: object, surrogates: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass" if surrogates else "strict")


bodies = st.one_of(
    valid_command.map(lambda v: encode(v, False)),
    st.tuples(command, st.booleans()).map(lambda t: encode(t[0], False)),
    st.tuples(command, st.just(True)).map(
        lambda t: encode(t[0], True)
    ),  # lone surrogates: not UTF-8
    any_json.map(lambda v: encode(v, False)),
    st.binary(max_size=300),
    st.integers(1, 80_000).map(
        lambda n: json.dumps({"magnet": "magnet:?" + "a" * n, "category": "tv"}).encode()
    ),
    st.integers(1, 40_000).map(
        lambda n: b'{"magnet": ' + b"[" * n + b"]" * n + b', "category": "tv"}'
    ),
)

PROFILE = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def test_every_body_is_either_added_or_dead_lettered_and_the_service_survives(
    qbit_factory, make_config, start_service, broker, names, events
):
    qbit = qbit_factory("fuzz")
    service = start_service(
        make_config(qbit, polling={"interval_seconds": 30}, categories={c: "" for c in CATEGORIES})
    )
    client = qbit.client()
    outcomes = {"added": 0, "dead-lettered": 0}

    @PROFILE
    @given(body=bodies)
    def one_body(body: bytes) -> None:
        events.drain()
        seen = len(events.events)
        message_id = str(uuid.uuid4())
        broker.publish(names.command_exchange, "downloads.add", body, message_id=message_id)

        def terminal():
            new = events.drain()[seen:]
            return [e for e in new if e["event"] in ("downloads.added", "downloads.failed")]

        [outcome] = wait_until(terminal, 30, "the command's outcome")
        if outcome["event"] == "downloads.added":
            assert client.torrents_info(torrent_hashes=outcome["hash"]) or outcome["infohash_v2"]
            outcomes["added"] += 1
        else:
            assert outcome["reason"] in REASONS
            [(props, dead_body)] = broker.get_all(names.dead_letter_queue, timeout=10, count=1)
            assert props.message_id == message_id
            assert dead_body == body
            assert props.headers["x-error-reason"] == outcome["reason"]
            outcomes["dead-lettered"] += 1
        assert service.alive

    one_body()
    print(f"\nfuzz outcomes: {outcomes}")
    assert outcomes["added"] > 0 and outcomes["dead-lettered"] > 0
    assert broker.message_count(names.command_queue) == 0
