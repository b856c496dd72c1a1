"""pika without its asyncio adapter, which the service never uses.

``import pika`` imports every adapter pika has, and its asyncio adapter imports asyncio: 3.4 MB
of resident memory on a NAS for a connection type the service does not make (it uses the
blocking adapter only). A placeholder takes the adapter's place in ``sys.modules`` before pika
is first imported, so pika's ``from pika.adapters.asyncio_connection import AsyncioConnection``
finds it instead of loading asyncio. A process that imported pika already (a test) keeps the
real adapter. ``tests/unit/test_lean_imports.py`` checks that the service's imports stay lean.
"""

from __future__ import annotations

import sys
import types

ASYNCIO_ADAPTER = "pika.adapters.asyncio_connection"


def leave_out_asyncio() -> None:
    if "pika" in sys.modules:
        return
    placeholder = types.ModuleType(ASYNCIO_ADAPTER, "Left out by qbit_consumer.broker.lean.")
    placeholder.AsyncioConnection = None  # type: ignore[attr-defined]  # pika re-exports it
    sys.modules.setdefault(ASYNCIO_ADAPTER, placeholder)
