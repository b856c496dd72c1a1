"""Connection parameters, and pika's exceptions read as one sentence."""

from __future__ import annotations

import re
import ssl
from typing import Final
from urllib.parse import urlsplit

import pika
import pika.exceptions

#: Seconds; frames go out every half of it. Explicit so a broker default cannot change it, and
#: long enough that a slow confirm never looks like a dead peer. Threads that own a connection
#: never block longer than a fraction of this (qBittorrent calls run on a helper thread).
HEARTBEAT_SECONDS: Final = 30
#: A broker under a memory or disk alarm blocks publishers; give up after this many seconds
#: and reconnect, instead of hanging forever inside basic_publish.
BLOCKED_CONNECTION_TIMEOUT: Final = 60

#: What pika raises when a connection or channel fails (sockets included).
AMQP_ERRORS: Final = (pika.exceptions.AMQPError, OSError)


def parameters(url: str, connection_name: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = HEARTBEAT_SECONDS
    params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.client_properties = {"connection_name": connection_name, "product": "qbit-consumer"}
    if urlsplit(url).scheme == "amqps":
        # pika's own amqps default is a bare SSLContext with no CA certificates loaded, so it
        # can verify nothing. The system trust store, hostname checked, is what users expect.
        context = ssl.create_default_context()
        params.ssl_options = pika.SSLOptions(context, server_hostname=urlsplit(url).hostname)
    return params


def describe(exc: BaseException) -> str:
    if isinstance(exc, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{exc.reply_code} {exc.reply_text}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args:
        text = "; ".join(str(a) for a in exc.args) or type(exc).__name__
    return text


def conflict_sentence(what: str, exc: pika.exceptions.ChannelClosedByBroker) -> str:
    text = exc.reply_text
    # e.g. "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'downloads.commands'
    # in vhost '/': received the value 'quorum' of type 'longstr' but current is none"
    argument = re.search(r"inequivalent arg '([^']+)'", text)
    if argument:
        return (
            f"{what} already exists with a different '{argument.group(1)}' argument "
            f"({text}); it was left untouched: change the config to match, or delete it "
            "in the management UI once it is empty"
        )
    return f"{what} cannot be declared: {exc.reply_code} {text}; it was left untouched"
