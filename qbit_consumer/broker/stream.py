"""Reading a RabbitMQ stream over AMQP 0-9-1, as the audit trail needs it: from a point in
time, to the end that was there when the reading began, acking as it goes (a stream is not
consumed by its readers: an ack only moves this reader's credit), and changing nothing.

RabbitMQ tells an AMQP reader neither where a stream ends nor when it got there: a consumer
simply waits for more. So the end is found first: a consumer from ``last`` gets the last chunk
of the stream, whose highest ``x-stream-offset`` is the last message now; the reading then
stops at that offset. The broker sends a chunk's messages back to back, so once the first has
come, a short quiet spell (``CHUNK_GAP_SECONDS``) ends the chunk; only an empty stream costs
the longer wait for a first message (``END_WAIT_SECONDS``). Events published meanwhile are
left for the next reading. A timestamp offset starts at the first chunk written at or after
that second, so the caller filters what came before it by the events' own times.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

import pika.exceptions

from qbit_consumer.broker.connection import Broker
from qbit_consumer.broker.params import AMQP_ERRORS, describe
from qbit_consumer.errors import BrokerUnavailable, HistoryUnavailable

#: Messages a reader may hold unacked: RabbitMQ requires a prefetch for stream consumers.
STREAM_PREFETCH: Final = 500
#: How long to wait for the last chunk of a stream (it is delivered at once when there is one).
END_WAIT_SECONDS: Final = 1.0
#: Once the last chunk has begun to arrive, the quiet spell that says it is all there. Its
#: messages come back to back (acks keep the prefetch window open), so this only has to
#: outlast a round trip to the broker, with a wide margin.
CHUNK_GAP_SECONDS: Final = 0.25
#: How often a waiting reader looks at the clock.
_TICK_SECONDS: Final = 0.02
#: A reading that gets nothing for this long has reached the end anyway (the last chunk was
#: removed by retention meanwhile, say).
IDLE_SECONDS: Final = 5.0


class StreamReader(Broker):
    """A ``Broker`` that reads streams."""

    def stream_end(self, stream: str) -> int | None:
        """The offset of the last message in ``stream`` now; None when it holds none.

        :raises HistoryUnavailable: there is no such stream (or it is not a stream).
        """
        last: int | None = None
        for offset, _body in self._consume(stream, "last", END_WAIT_SECONDS, CHUNK_GAP_SECONDS):
            last = offset if last is None else max(last, offset)
        return last

    def read(self, stream: str, start: datetime | str, end: int) -> Iterator[tuple[int, bytes]]:
        """(offset, body) of each message from ``start`` (a time, or ``"first"``) up to the
        offset ``end`` included."""
        for offset, body in self._consume(stream, start, IDLE_SECONDS, IDLE_SECONDS):
            if offset <= end:
                yield offset, body
            if offset >= end:
                return

    def _consume(
        self, stream: str, start: datetime | str, first_wait: float, gap: float
    ) -> Iterator[tuple[int, bytes]]:
        """(offset, body) from ``start`` until nothing came for ``first_wait`` seconds before
        the first message, or for ``gap`` seconds after one."""
        channel = self._require_channel()
        try:
            channel.basic_qos(prefetch_count=STREAM_PREFETCH)
            messages = channel.consume(
                stream, arguments={"x-stream-offset": start}, inactivity_timeout=_TICK_SECONDS
            )
            quiet_since, limit = time.monotonic(), first_wait
            for method, properties, body in messages:
                if method is None:
                    if time.monotonic() - quiet_since >= limit:
                        break
                    continue
                yield _offset(properties), body
                channel.basic_ack(method.delivery_tag)
                quiet_since, limit = time.monotonic(), gap
            channel.cancel()
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            raise HistoryUnavailable(_unreadable(stream, exc)) from exc
        except AMQP_ERRORS as exc:
            self.close()
            reason = describe(exc)
            raise BrokerUnavailable(f"reading the stream '{stream}' failed: {reason}") from exc


def _offset(properties: Any) -> int:
    value = (properties.headers or {}).get("x-stream-offset")
    if not isinstance(value, int):
        raise HistoryUnavailable("the queue is not a stream (no x-stream-offset on its messages)")
    return value


def _unreadable(stream: str, exc: pika.exceptions.ChannelClosedByBroker) -> str:
    if exc.reply_code == 404:
        return (
            f"there is no history stream '{stream}' on this broker: the service declares it "
            "at start when [history] enabled is true"
        )
    return f"the history stream '{stream}' cannot be read: {exc.reply_code} {exc.reply_text}"
