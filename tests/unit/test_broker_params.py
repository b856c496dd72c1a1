from __future__ import annotations

import ssl

from qbit_consumer.broker.params import (
    BLOCKED_CONNECTION_TIMEOUT,
    HEARTBEAT_SECONDS,
    parameters,
)
from qbit_consumer.redact import redact_url


def test_amqps_verifies_the_certificate_and_host_name_by_default():
    params = parameters("amqps://u:p@broker.example:5671/%2F", "test")
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert params.ssl_options.server_hostname == "broker.example"


def test_heartbeat_and_blocked_connection_timeout_are_explicit():
    params = parameters("amqp://u:p@localhost/%2F", "test")
    assert params.heartbeat == HEARTBEAT_SECONDS
    assert params.blocked_connection_timeout == BLOCKED_CONNECTION_TIMEOUT
    assert params.ssl_options is None
    assert params.client_properties["connection_name"] == "test"


def test_urls_are_logged_without_their_password():
    assert redact_url("amqp://user:s3cret@host:5672/%2F") == "amqp://user:***@host:5672/%2F"
    assert redact_url("amqp://host/") == "amqp://host/"
