"""Dead-letter and retry copies of messages that another client (not pika) published: pika
reads header values it cannot write back, and the copy must still be publishable. The live
side (user_id, expiration, CC on the real broker) is in tests/test_hostile_commands.py."""

from __future__ import annotations

import decimal

import pika
import pika.data

from qbit_consumer.broker import Delivery, copy_properties


def delivery(**properties: object) -> Delivery:
    props = pika.BasicProperties(**properties)
    return Delivery(
        body=b"{}",
        exchange="downloads",
        routing_key="downloads.add",
        delivery_tag=1,
        redelivered=False,
        properties=props,
        headers=dict(props.headers or {}),
        correlation_id=props.correlation_id,
        message_id=props.message_id,
    )


def test_header_values_pika_cannot_write_are_kept_as_text():
    # As pika decodes them from another client's 'd', 'D' and 'L' field values.
    read = {
        "ratio": 1.5,
        "nested": [1.0, "x"],
        "tiny": decimal.Decimal("1E-300"),
        "huge": 2**64,
        "fine": 7,
    }
    copy = copy_properties(delivery(headers=read), {"x-error-reason": "invalid_json"})
    pika.data.encode_table([], copy.headers)  # would raise if any value were unwritable
    assert copy.headers["ratio"] == "1.5"
    assert copy.headers["nested"] == "[1.0, 'x']"
    assert copy.headers["tiny"] == "Decimal('1E-300')"
    assert copy.headers["huge"] == str(2**64)
    assert copy.headers["fine"] == 7
    assert copy.headers["x-error-reason"] == "invalid_json"


def test_user_id_expiration_and_cc_move_into_headers_and_the_copy_is_persistent():
    copy = copy_properties(
        delivery(
            user_id="someone",
            expiration="1000",
            delivery_mode=1,
            headers={"CC": ["q"], "BCC": ["r"]},
            message_id="m",
        ),
        {},
    )
    assert copy.user_id is None and copy.expiration is None
    assert copy.delivery_mode == 2
    assert copy.headers == {
        "x-original-user-id": "someone",
        "x-original-expiration": "1000",
        "x-original-cc": ["q"],
        "x-original-bcc": ["r"],
        "x-original-delivery-mode": 1,
    }
    assert copy.message_id == "m"
