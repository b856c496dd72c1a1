"""RabbitMQ through pika's BlockingConnection. The only package that imports pika.

Thread rule (pika FAQ at 1.4.4): a ``Broker`` and its channel belong to the thread that created
them. The one call another thread may make is ``call_soon_threadsafe``, which wraps
``add_callback_threadsafe``.

Every pika exception is translated here: connection-level problems become ``BrokerUnavailable``
(the caller reconnects), a declaration refused with 406/404 becomes ``TopologyConflict`` (the
caller stops). The channel is always in confirm mode, so a ``publish`` that returns means the
broker has taken responsibility for the message.

Confirms are streamed: ``send`` puts a message on the wire and returns at once, ``settle`` waits
until the broker has confirmed everything sent so far. A batch of events thus costs one round
trip instead of one per event. pika's BlockingChannel only offers publish-and-wait, so this
uses its underlying asynchronous channel (``BlockingChannel._impl``, the one private pika
attribute we touch; the broker tests fail loudly if a pika release moves it).

Modules: ``connection`` (the ``Broker``), ``messages`` (``Delivery``, ``Outgoing``),
``publishing`` (an event on the wire, for both publishing threads), ``operator`` (the
operator commands' verbs: reading a queue, listening, publish-and-wait), ``confirms`` (the
bookkeeping of streamed confirms), ``copies`` (what a retry or dead-letter copy keeps),
``topology`` (what we declare, as data), ``declaring`` (a topology as AMQP calls),
``reconnect`` (the reconnect loop and the upkeep of a connected thread), ``params`` (connection
parameters, pika's errors as sentences). Only ``connection``, ``copies``, ``declaring`` and
``params`` import pika; ``lean`` keeps pika's asyncio adapter out of the process.
"""

from qbit_consumer.broker.lean import leave_out_asyncio

leave_out_asyncio()  # before any module of this package imports pika

from qbit_consumer.broker.confirms import Sent  # noqa: E402
from qbit_consumer.broker.connection import Broker  # noqa: E402
from qbit_consumer.broker.copies import copy_properties  # noqa: E402
from qbit_consumer.broker.messages import Delivery, Outgoing  # noqa: E402

__all__ = ["Broker", "Delivery", "Outgoing", "Sent", "copy_properties"]
