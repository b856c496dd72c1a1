from __future__ import annotations

import json

import pytest

from qbit_consumer.commands import add
from qbit_consumer.commands.table import parse_command
from qbit_consumer.config import Config
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.errors import InvalidCommand

V1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
MAGNET = f"magnet:?xt=urn:btih:{V1}&dn=x"
CATEGORIES = {"movies": "", "tv": "/data/tv"}


def parse(body, correlation_id=None, message_id=None):
    context = CommandContext()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    _, command = parse_command(
        add.ROUTING_KEY,
        raw,
        correlation_id=correlation_id,
        message_id=message_id,
        cfg=Config(categories=CATEGORIES),
        context=context,
    )
    return command, context


def test_valid_command_becomes_a_typed_object_and_unknown_fields_are_ignored():
    command, _ = parse(
        {
            "magnet": MAGNET,
            "category": "tv",
            "request_id": "r1",
            "tags": ["a", "b", "a"],
            "priority": "high",
        }
    )
    assert command.source.hash == V1
    assert command.category == "tv"
    assert command.request_id == "r1"
    assert command.tags == ("a", "b")


def test_request_id_prefers_the_body_then_correlation_id_then_message_id():
    assert (
        parse({"magnet": MAGNET, "category": "tv", "request_id": "b"}, "c", "m")[0].request_id
        == "b"
    )
    assert parse({"magnet": MAGNET, "category": "tv"}, "c", "m")[0].request_id == "c"
    assert parse({"magnet": MAGNET, "category": "tv"}, None, "m")[0].request_id == "m"
    assert parse({"magnet": MAGNET, "category": "tv", "request_id": None})[0].request_id is None


def test_a_failure_keeps_what_was_understood_for_the_failed_event():
    with pytest.raises(InvalidCommand) as info:
        parse({"magnet": MAGNET, "category": "nope", "request_id": "r9"})
    assert info.value.reason == "invalid_category"
    context = CommandContext()
    with pytest.raises(InvalidCommand):
        parse_command(
            add.ROUTING_KEY,
            json.dumps({"magnet": MAGNET, "category": "nope", "request_id": "r9"}).encode(),
            correlation_id=None,
            message_id=None,
            cfg=Config(categories=CATEGORIES),
            context=context,
        )
    assert context.request_id == "r9"
    assert context.hash == V1
    assert context.category is None


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        # 64 KiB, plus room for a .torrent of max_torrent_bytes (4 MiB) in base64...
        (b"x" * (65_536 + 5_592_408 + 1), "too_large", "limit is 5657944"),
        # ...which a magnet does not get.
        (
            {"magnet": MAGNET, "category": "tv", "pad": "x" * 65_536},
            "too_large",
            "limit is 65536",
        ),
        (b"\xc3\x28", "invalid_json", "not UTF-8"),
        (b"{", "invalid_json", "not JSON"),
        (b"[" * 30_000 + b"]" * 30_000, "invalid_json", "nested too deeply"),
        (b"[]", "invalid_message", "JSON array"),
        ({"category": "tv"}, "invalid_message", "exactly one of the fields 'magnet' and 'torrent'"),
        (
            {"magnet": MAGNET, "torrent": "ZA==", "category": "tv"},
            "invalid_message",
            "exactly one of the fields 'magnet' and 'torrent'",
        ),
        (
            {"magnet": 1, "category": "tv"},
            "invalid_message",
            "'magnet' must be a string, got number",
        ),
        (
            {"magnet": MAGNET, "category": True},
            "invalid_message",
            "'category' must be a string, got boolean",
        ),
        ({"magnet": MAGNET, "category": "tv", "tags": [1]}, "invalid_message", "list of strings"),
        (
            {"magnet": MAGNET, "category": "tv", "tags": [" padded"]},
            "invalid_message",
            "surrounding spaces",
        ),
        ({"magnet": MAGNET, "category": "tv", "tags": ["t"] * 33}, "invalid_message", "at most 32"),
        ({"magnet": MAGNET, "category": "tv", "request_id": ""}, "invalid_message", "1-128"),
        (
            {"magnet": "magnet:?xt=urn:btih:00", "category": "bogus"},
            "invalid_magnet",
            "btih info-hash '00' is neither 40 hex nor 32 base32",
        ),
        ({"magnet": MAGNET, "category": "Movies"}, "invalid_category", "is not one of movies, tv"),
    ],
)
def test_each_kind_of_bad_body_maps_to_its_reason(body, reason, words):
    with pytest.raises(InvalidCommand) as info:
        parse(body)
    assert info.value.reason == reason
    assert words in info.value.detail


def test_body_of_exactly_64_kib_is_accepted():
    body = json.dumps({"magnet": MAGNET, "category": "tv", "pad": ""}).encode()
    body = body[:-2] + b"x" * (64 * 1024 - len(body)) + b'"}'
    assert len(body) == 64 * 1024
    assert parse(body)[0].source.hash == V1
