"""In-memory stand-ins for RabbitMQ and qBittorrent, in the spirit of dramatiq's ``StubBroker``:
the command handler and the poller run against them unchanged, with no network, no thread and
no subprocess, so a test can say exactly what the broker or qBittorrent does and see exactly
what the code under test did about it.

* ``StubBroker``: the ``Broker`` methods the ``CommandHandler`` and ``Declarations`` call. What is
  published is kept (``published``, ``events``, ``copies``), what is acked too (``acks``,
  ``acked``), and everything in order on ``timeline``. Confirms go through the real ``InFlight``:
  a ``Sent`` is confirmed only at ``settle``, unroutable or nacked as configured.
* ``delivery``: a ``Delivery`` as the consumer would receive it.
* ``FakeQbit``: the ``QbitClient`` methods the add path and the poller call, over a dict of
  ``Torrent``s a test can change, and able to fail on the next call(s).
* ``run_now``: the ``QbitRunner`` the handler is given, running its work at once.
* ``Clock``: a ``time`` module stand-in (``monotonic``, ``time``) that moves only when told.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, Final, TypeVar

import attrs
import pika

from qbit_consumer.broker.confirms import InFlight, Sent
from qbit_consumer.broker.copies import copy_properties
from qbit_consumer.broker.messages import Delivery, Outgoing
from qbit_consumer.broker.topology import Topology
from qbit_consumer.contract.magnet import parse_magnet
from qbit_consumer.errors import ShuttingDown
from qbit_consumer.model import Torrent

T = TypeVar("T")

#: qBittorrent's ``added_on`` of every torrent a test does not date otherwise.
ADDED_ON: Final = 1_700_000_000
#: What ``FakeQbit.complete`` gives as ``completion_on`` (a real time: after the first day of 1970).
COMPLETED_ON: Final = 1_700_000_600


# -- RabbitMQ ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class Published:
    """One message put on the stub's wire: an event (``send``) or a copy (``resend``)."""

    exchange: str
    routing_key: str  # a copy's is the queue it goes to (through the default exchange)
    body: bytes
    headers: dict[str, Any]  # a copy's headers; {} for an event
    properties: Any  # ``Outgoing`` for an event, ``pika.BasicProperties`` for a copy
    sent: Sent

    @property
    def is_copy(self) -> bool:
        return self.exchange == ""

    @property
    def event(self) -> dict[str, Any]:
        """The body, JSON-decoded (an event's)."""
        return json.loads(self.body)


class StubBroker:
    """A ``Broker`` without a broker. Configure before (or between) calls:

    * ``unroutable``: routing keys (events) and queue names (copies) no queue takes: the message
      is confirmed with ``routed`` False, as a ``basic.return`` makes it.
    * ``refused``: routing keys and queue names whose messages the broker nacks (a queue with a
      ``reject-publish`` length limit is full): confirmed with ``nacked`` True.
    """

    def __init__(self) -> None:
        self.unroutable: set[str] = set()
        self.refused: set[str] = set()
        #: Everything sent, in order.
        self.published: list[Published] = []
        #: (delivery tag, and_earlier) of each ack, in order.
        self.acks: list[tuple[int, bool]] = []
        #: What happened, in order: "publish <routing key>", "copy <queue>", "settle", "ack",
        #: "declare", and whatever a test adds with ``note`` (a recorder's "record").
        self.timeline: list[str] = []
        self.declared: list[Topology] = []
        #: The seconds of each sleep or idle (the connection serviced meanwhile), in order.
        self.waited: list[float] = []
        self._inflight = InFlight()
        self._waiting: list[Published] = []

    # -- what a test looks at ----------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """The bodies of the events published, decoded, in order."""
        return [p.event for p in self.published if not p.is_copy]

    @property
    def event_names(self) -> list[str]:
        return [p.routing_key for p in self.published if not p.is_copy]

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [p.event for p in self.published if not p.is_copy and p.routing_key == name]

    @property
    def copies(self) -> list[Published]:
        """The retry and dead-letter copies, in order."""
        return [p for p in self.published if p.is_copy]

    def acked(self, delivery: Delivery) -> bool:
        """Whether some ack covers ``delivery`` (its own tag, or a later one ``and_earlier``)."""
        tag = delivery.delivery_tag
        return any(t == tag or (earlier and t > tag) for t, earlier in self.acks)

    def note(self, what: str) -> None:
        """Put something a test's own callback did on the timeline."""
        self.timeline.append(what)

    def in_order(self, *steps: str) -> bool:
        """Whether ``steps`` happened in this order (others may come between them)."""
        rest = iter(self.timeline)
        return all(step in rest for step in steps)

    # -- the Broker methods the handler and Declarations call --------------------------------

    def send(self, exchange: str, routing_key: str, body: bytes, props: Outgoing) -> Sent:
        self.timeline.append(f"publish {routing_key}")
        return self._put(exchange, routing_key, body, {}, props, props.message_id)

    def resend(
        self,
        delivery: Delivery,
        routing_key: str,
        extra_headers: Mapping[str, Any],
        drop_headers: Callable[[str], bool] | None = None,
    ) -> Sent:
        # The real properties of a copy: what the DLQ would hold, header for header.
        properties = copy_properties(delivery, extra_headers, drop_headers)
        self.timeline.append(f"copy {routing_key}")
        return self._put(
            "", routing_key, delivery.body, properties.headers, properties, properties.message_id
        )

    def settle(self) -> None:
        """The broker answers everything in flight: a return first for what no queue takes (as
        RabbitMQ sends ``basic.return`` before the ack), then an ack or a nack each."""
        self.timeline.append("settle")
        waiting, self._waiting = self._waiting, []
        for message in waiting:
            sent = message.sent
            if message.routing_key in self.unroutable:
                self._inflight.returned(sent.exchange, sent.routing_key, sent.message_id)
            ok = message.routing_key not in self.refused
            self._inflight.confirm(sent.tag, multiple=False, ok=ok)

    def ack(self, delivery: Delivery, *, and_earlier: bool = False) -> None:
        self.timeline.append("ack")
        self.acks.append((delivery.delivery_tag, and_earlier))

    def wait_for(self, future: Future[T], stopping: Callable[[], bool] = lambda: False) -> T:
        if not future.done() and stopping():
            raise ShuttingDown("stopping while waiting for qBittorrent")
        return future.result()

    def sleep(self, seconds: float) -> None:
        self.waited.append(seconds)

    def idle(self, seconds: float) -> None:
        self.waited.append(seconds)

    def declare(self, topology: Topology) -> None:
        self.timeline.append("declare")
        self.declared.append(topology)

    def _put(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any] | None,
        properties: Any,
        message_id: str | None,
    ) -> Sent:
        sent = self._inflight.sent(exchange, routing_key, message_id)
        message = Published(exchange, routing_key, body, dict(headers or {}), properties, sent)
        self.published.append(message)
        self._waiting.append(message)
        return sent


_delivery_tags = itertools.count(1)  # increasing, as on a channel: ``and_earlier`` means "lower"
_NEW: Final = object()


def delivery(
    body: Mapping[str, Any] | bytes,
    routing_key: str = "downloads.add",
    exchange: str = "downloads",
    headers: Mapping[str, Any] | None = None,
    redelivered: bool = False,
    message_id: Any = _NEW,
    correlation_id: str | None = None,
) -> Delivery:
    """A message as the consumer receives it; a dict body is sent as JSON. Each gets a fresh
    ``message_id`` unless one is given (None: none), and a delivery tag above every earlier one."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        headers=dict(headers) if headers else None,
        message_id=str(uuid.uuid4()) if message_id is _NEW else message_id,
        correlation_id=correlation_id,
    )
    return Delivery(
        body=raw,
        exchange=exchange,
        routing_key=routing_key,
        delivery_tag=next(_delivery_tags),
        redelivered=redelivered,
        properties=properties,
        headers=dict(properties.headers or {}),
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
    )


# -- qBittorrent ------------------------------------------------------------------------------


def torrent(
    hash: str,
    *,
    name: str = "",
    state: str = "downloading",
    progress: float = 0.0,
    size: int = 1_000_000,
    save_path: str = "/downloads",
    completion_on: int = -1,
    added_on: int = ADDED_ON,
    infohash_v1: Any = _NEW,
    infohash_v2: str | None = None,
) -> Torrent:
    """A ``Torrent`` as ``torrents/info`` lists it (5.x's "never completed" is -1); its v1
    info-hash is its id unless given."""
    completed = round(size * progress)
    name = name or hash
    return Torrent(
        id=hash,
        infohash_v1=hash if infohash_v1 is _NEW else infohash_v1,
        infohash_v2=infohash_v2,
        name=name,
        state=state,
        save_path=save_path,
        content_path=f"{save_path}/{name}",
        progress=progress,
        size=size,
        amount_left=size - completed,
        completed=completed,
        completion_on=completion_on,
        dlspeed=0,
        upspeed=0,
        eta=8_640_000,
        num_seeds=0,
        num_leechs=0,
        added_on=added_on,
    )


@attrs.define
class _Failure:
    error: Exception
    method: str | None  # None: whatever is called next
    times: int


class FakeQbit:
    """A qBittorrent in memory, for the add path and the poller (``QbitClient``'s methods).

    ``listed`` holds the torrents by id; change them with ``change``, ``set_progress``,
    ``complete``, ``pause`` and ``remove``, or make the next call(s) fail with ``fail``. What
    was called is kept in ``calls``, and the ids of each ``torrents`` call in ``asked``.
    """

    def __init__(self, *torrents: Torrent) -> None:
        self.listed: dict[str, Torrent] = {t.id: t for t in torrents}
        self.categories: dict[str, str] = {}
        self.tags: dict[str, set[str]] = {}
        self.category_of: dict[str, str] = {}
        self.calls: list[str] = []
        self.asked: list[set[str]] = []
        #: What ``remove`` was asked: torrent id -> with its files.
        self.removed_with_files: dict[str, bool] = {}
        self.closed = False
        self._failures: list[_Failure] = []

    # -- what a test does ----------------------------------------------------------------------

    def fail(self, error: Exception, *, method: str | None = None, times: int = 1) -> None:
        """Raise ``error`` from the next ``times`` calls of ``method`` (of any method if None)."""
        self._failures.append(_Failure(error, method, times))

    def change(self, torrent_id: str, **fields: Any) -> Torrent:
        self.listed[torrent_id] = attrs.evolve(self.listed[torrent_id], **fields)
        return self.listed[torrent_id]

    def set_progress(self, torrent_id: str, progress: float, state: str = "downloading") -> None:
        size = self.listed[torrent_id].size
        completed = round(size * progress)
        self.change(
            torrent_id,
            progress=progress,
            completed=completed,
            amount_left=size - completed,
            state=state,
        )

    def complete(self, torrent_id: str, state: str = "uploading") -> None:
        size = self.listed[torrent_id].size
        self.change(
            torrent_id,
            progress=1.0,
            completed=size,
            amount_left=0,
            completion_on=COMPLETED_ON,
            state=state,
        )

    def pause(self, torrent_id: str) -> None:
        """Stopped in qBittorrent 5.x's words (4.x says pausedDL)."""
        self.change(torrent_id, state="stoppedDL")

    def remove(self, torrent_id: str) -> None:
        del self.listed[torrent_id]

    # -- QbitClient's methods ------------------------------------------------------------------

    def ping(self) -> None:
        self._call("ping")

    def version(self) -> tuple[str, str]:
        self._call("version")
        return "v5.3.0", "2.16.0"

    def torrents(self, ids: Iterable[str]) -> list[Torrent]:
        """Like ``torrents/info?hashes=``: matches torrent ids only, and the real client asks
        nothing when no id is 40 characters long."""
        wanted = {i for i in ids if len(i) == 40}
        if not wanted:
            return []
        self._call("torrents")
        self.asked.append(wanted)
        return [self._with_tags(t) for t in self.listed.values() if t.id in wanted]

    def all_torrents(self) -> list[Torrent]:
        self._call("all_torrents")
        return [self._with_tags(t) for t in self.listed.values()]

    def tagged(self, tag: str) -> list[Torrent]:
        self._call("tagged")
        return [self._with_tags(t) for t in self.listed.values() if tag in self.tags.get(t.id, ())]

    def remove_torrent(self, torrent_id: str, *, delete_files: bool) -> None:
        self._call("remove_torrent")
        self.removed_with_files[torrent_id] = delete_files
        del self.listed[torrent_id]

    def pause_torrent(self, torrent_id: str) -> None:
        self._call("pause_torrent")
        self.change(
            torrent_id,
            state="stoppedUP" if self.listed[torrent_id].amount_left == 0 else "stoppedDL",
        )

    def resume_torrent(self, torrent_id: str) -> None:
        self._call("resume_torrent")
        self.change(
            torrent_id,
            state="uploading" if self.listed[torrent_id].amount_left == 0 else "downloading",
        )

    def _with_tags(self, t: Torrent) -> Torrent:
        return (
            attrs.evolve(t, tags=tuple(sorted(self.tags.get(t.id, ())))) if t.id in self.tags else t
        )

    def ensure_category(self, name: str, save_path: str) -> None:
        self._call("ensure_category")
        self.categories.setdefault(name, save_path)

    def add_magnet(self, uri: str, *, category: str, tags: Iterable[str], save_path: str) -> bool:
        """qBittorrent's ``Ok.`` when it took at least one new torrent, and lists each at once;
        ``Fails.`` (False) when every magnet was one it already has."""
        self._call("add_magnet")
        accepted = False
        for line in uri.split("\n"):
            magnet = parse_magnet(line)
            torrent_id = magnet.infohash_v2[:40] if magnet.infohash_v2 else magnet.hash
            if torrent_id in self.listed:
                continue
            accepted = True
            self.listed[torrent_id] = torrent(
                torrent_id,
                name=magnet.display_name or torrent_id,
                state="metaDL",
                save_path=save_path or "/downloads",
                infohash_v1=magnet.infohash_v1,
                infohash_v2=magnet.infohash_v2,
            )
            self.category_of[torrent_id] = category
            self.tags[torrent_id] = set(tags)
        return accepted

    def add_tags(self, torrent_id: str, tags: Iterable[str]) -> None:
        self._call("add_tags")
        self.tags.setdefault(torrent_id, set()).update(tags)

    def close(self) -> None:
        self.closed = True

    def _call(self, method: str) -> None:
        self.calls.append(method)
        for failure in self._failures:
            if failure.method in (None, method):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                raise failure.error


def run_now(qbit: FakeQbit) -> Callable[[Callable[[Any], T]], Future[T]]:
    """A ``QbitRunner``: runs the work at once with ``qbit``; the future is already done, with
    its result or its exception (as ``QbitWorker`` hands either over)."""

    def run(work: Callable[[Any], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(work(qbit))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    return run


# -- time -------------------------------------------------------------------------------------


class Clock:
    """Stands in for the ``time`` module of a module under test (``monkeypatch.setattr(module,
    "time", clock)``): ``monotonic`` and ``time`` move only with ``advance``."""

    def __init__(self, monotonic: float = 1_000.0, wall: float = 1_800_000_000.0) -> None:
        self._monotonic = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall += seconds
