"""A valid downloads.add command, end to end on real RabbitMQ and real qbittorrent-nox."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from qbit_consumer.contract.messages import MANAGED_TAG
from qbit_consumer.qbit.client import QbitClient
from tests.fixtures.faults import HttpFaultProxy
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import magnet_for, random_hash

pytestmark = pytest.mark.live

ENVELOPE = (
    "schema",
    "event",
    "event_id",
    "occurred_at",
    "request_id",
    "hash",
    "infohash_v2",
    "name",
    "category",
)
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def send(broker, names, body, **properties) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    broker.publish(names.command_exchange, "downloads.add", data, **properties)


@pytest.mark.compat
def test_valid_command_adds_torrent_with_category_save_path_and_tags(
    qbittorrent, make_config, start_service, broker, names, events, tmp_path
):
    # A category of this test's own: qBittorrent is shared, and a category another test created
    # first keeps its save path (the service never changes an existing one).
    category = f"movies-{random_hash()[:8]}"
    save_path = tmp_path / "movies"
    cfg = make_config(qbittorrent, categories={category: save_path, "tv": ""})
    start_service(cfg)
    infohash = random_hash()

    send(
        broker,
        names,
        {
            "magnet": magnet_for(infohash, "Big Buck Bunny"),
            "category": category,
            "request_id": "req-1",
            "tags": ["from-test", "hd"],
        },
    )

    added = events.wait_for("downloads.added", hash=infohash)[0]
    received = events.of("downloads.received", hash=infohash)[0]
    torrent = qbittorrent.client().torrents_info(torrent_hashes=infohash)[0]
    assert torrent.category == category
    assert torrent.save_path.rstrip("/") == str(save_path)
    assert set(torrent.tags.split(", ")) == {MANAGED_TAG, "from-test", "hd"}
    assert qbittorrent.client().torrents_categories()[category]["savePath"].rstrip("/") == str(
        save_path
    )

    for event in (received, added):
        assert tuple(event)[: len(ENVELOPE)] == ENVELOPE
        assert event["schema"] == 1
        assert uuid.UUID(event["event_id"]).version == 4
        assert RFC3339_MS.match(event["occurred_at"])
        assert event["request_id"] == "req-1"
        assert event["hash"] == infohash
        assert event["infohash_v2"] is None
        assert event["category"] == category
    assert received["magnet"] == magnet_for(infohash, "Big Buck Bunny")
    assert received["name"] == "Big Buck Bunny"
    assert added["save_path"].rstrip("/") == str(save_path)
    assert added["duplicate"] is False
    assert added["name"] == "Big Buck Bunny"
    assert events.events.index(received) < events.events.index(added)

    props = events.properties_of(added["event_id"])
    assert props.content_type == "application/json"
    assert props.message_id == added["event_id"]
    assert props.type == "event"
    assert props.correlation_id == "req-1"
    assert props.delivery_mode == 2
    assert props.timestamp > 1_700_000_000
    wait_until(
        lambda: broker.message_count(names.command_queue) == 0, 10, "the command to be acked"
    )


@pytest.mark.compat
def test_same_hash_again_is_added_as_duplicate_not_error(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent))
    infohash = random_hash()
    send(broker, names, {"magnet": magnet_for(infohash), "category": "tv", "request_id": "first"})
    events.wait_for("downloads.added", hash=infohash, request_id="first")

    send(
        broker,
        names,
        {
            "magnet": magnet_for(infohash),
            "category": "tv",
            "request_id": "second",
            "tags": ["again"],
        },
    )

    second = events.wait_for("downloads.added", hash=infohash, request_id="second")[0]
    assert second["duplicate"] is True
    assert events.of("downloads.failed") == []
    assert broker.get_all(names.dead_letter_queue) == []
    torrents = qbittorrent.client().torrents_info(torrent_hashes=infohash)
    assert len(torrents) == 1
    assert "again" in torrents[0].tags


@pytest.mark.compat
def test_an_add_qbittorrent_refuses_because_it_holds_the_torrent_is_a_duplicate(
    qbittorrent, make_config, start_service, broker, names, events, mocker
):
    """The service's lookup misses a torrent that someone adds right after it (a redelivered
    command racing its first delivery's add): the add it then sends is refused as a duplicate,
    409 from 5.2, "Fails." before; both mean "I hold it", not "bad magnet"."""
    infohash = random_hash()
    qbittorrent.client().torrents_add(urls=magnet_for(infohash), category="movies")
    lookup = QbitClient.torrents
    raced = []

    def lookup_raced_by_the_add(self, ids):
        if infohash in ids and not raced:
            raced.append(True)
            return []
        return lookup(self, ids)

    mocker.patch.object(QbitClient, "torrents", lookup_raced_by_the_add)
    proxy = HttpFaultProxy(qbittorrent.url)
    try:
        start_service(
            make_config(None, qbittorrent={"url": proxy.url, "password": qbittorrent.password})
        )
        send(broker, names, {"magnet": magnet_for(infohash), "category": "tv", "request_id": "r"})
        [added] = events.wait_for("downloads.added", hash=infohash, request_id="r")
    finally:
        proxy.close()
    assert raced and added["duplicate"] is True
    adds = [
        (status, body) for path, status, body in proxy.answers if path == "/api/v2/torrents/add"
    ]
    if qbittorrent.version_info >= (5, 2):
        assert adds and all(status == 409 for status, _ in adds), adds
    else:
        assert adds and all((status, body) == (200, "Fails.") for status, body in adds), adds
    assert events.of("downloads.failed") == []
    assert broker.get_all(names.dead_letter_queue) == []
    [torrent] = qbittorrent.client().torrents_info(torrent_hashes=infohash)
    assert MANAGED_TAG in torrent.tags and torrent.category == "movies"


def test_request_id_falls_back_to_correlation_id_then_message_id(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent))
    by_correlation, by_message_id, by_nothing = random_hash(), random_hash(), random_hash()

    send(
        broker,
        names,
        {"magnet": magnet_for(by_correlation), "category": "tv"},
        correlation_id="corr-7",
        message_id="msg-7",
    )
    send(broker, names, {"magnet": magnet_for(by_message_id), "category": "tv"}, message_id="msg-8")
    send(broker, names, {"magnet": magnet_for(by_nothing), "category": "tv"})

    assert events.wait_for("downloads.added", hash=by_correlation)[0]["request_id"] == "corr-7"
    assert events.wait_for("downloads.added", hash=by_message_id)[0]["request_id"] == "msg-8"
    no_id = events.wait_for("downloads.added", hash=by_nothing)[0]
    assert no_id["request_id"] is None
    assert events.properties_of(no_id["event_id"]).correlation_id is None


@pytest.mark.compat
def test_base32_and_hybrid_magnets_are_keyed_by_their_v1_hash(
    qbittorrent, make_config, start_service, broker, names, events
):
    start_service(make_config(qbittorrent))
    import base64
    import secrets

    raw = secrets.token_bytes(20)
    base32_hex = raw.hex()
    b32 = base64.b32encode(raw).decode()
    v1, v2 = random_hash(), secrets.token_hex(32)
    hybrid = f"magnet:?xt.1=urn:btih:{v1}&xt.2=urn:btmh:1220{v2}&dn=hybrid"
    v2_only = secrets.token_hex(32)

    send(broker, names, {"magnet": f"magnet:?xt=urn:btih:{b32.lower()}&dn=b32", "category": "tv"})
    send(broker, names, {"magnet": hybrid, "category": "tv"})
    send(broker, names, {"magnet": f"magnet:?xt=urn%3Abtmh%3A1220{v2_only}", "category": "tv"})

    [base32_added] = events.wait_for("downloads.added", hash=base32_hex)
    assert base32_added["infohash_v2"] is None and base32_added["name"] == "b32"
    hybrid_added = events.wait_for("downloads.added", hash=v1)[0]
    assert hybrid_added["infohash_v2"] == v2
    v2_added = events.wait_for("downloads.added", hash=v2_only[:40])[0]
    assert v2_added["infohash_v2"] == v2_only
    client = qbittorrent.client()
    assert client.torrents_info(torrent_hashes=base32_hex)
    # qBittorrent lists a hybrid torrent under its v2 id (truncated); our hash stays the v1.
    listed = client.torrents_info(torrent_hashes=v2[:40])
    assert listed and listed[0].infohash_v1 == v1
