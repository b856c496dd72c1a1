"""Carrying out one ``downloads.add`` command, and deciding what becomes of the message.

This is the one place where our error types turn into broker actions:

=====================  ===============================================================
outcome                what happens to the message
=====================  ===============================================================
added (or duplicate)   ``received`` + ``added`` confirmed, then ack
``InvalidCommand``     copy to the DLQ (confirmed), ``failed`` event, then ack
``TransientError``     copy to the retry queue (confirmed), then ack; on the last
                       attempt copy to the DLQ as ``retries_exhausted`` instead
``BrokerUnavailable``  no ack: the broker redelivers it after we reconnect
=====================  ===============================================================

"Confirmed" is awaited once per batch: everything a batch publishes goes out without waiting,
then one ``settle`` waits for all of its confirms. The ack always comes after that, so a crash
anywhere leaves the message in RabbitMQ; a redelivered command whose torrent was already added
is answered as a duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, Protocol, TypeVar

import attrs

from qbit_consumer.adding import AddResult, add_downloads
from qbit_consumer.broker import Broker, Delivery, Outgoing
from qbit_consumer.config import Config
from qbit_consumer.confirms import Sent
from qbit_consumer.errors import (
    RETRIES_EXHAUSTED,
    BrokerUnavailable,
    InvalidCommand,
    TransientError,
)
from qbit_consumer.events import Added, Event, Failed, Received, now_rfc3339
from qbit_consumer.messages import AddCommand, CommandContext, parse_command
from qbit_consumer.qbit import QbitClient

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS_HEADER: Final = "x-attempts"


class QbitRunner(Protocol):
    """Starts a function with the consumer's QbitClient on its own thread, off the broker
    connection's thread; the caller waits for the future with ``Broker.wait_for``."""

    def __call__(self, work: Callable[[QbitClient], T]) -> Future[T]: ...


@attrs.define
class _Taken:
    """One delivery of a batch and what is known of it."""

    delivery: Delivery
    attempt: int
    context: CommandContext
    command: AddCommand | None = None


class CommandHandler:
    """Handles deliveries, a batch at a time, on the consumer thread."""

    def __init__(
        self,
        cfg: Config,
        broker: Broker,
        run_qbit: QbitRunner,
        on_added: Callable[[list[tuple[AddCommand, AddResult]]], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._broker = broker
        self._run_qbit = run_qbit
        self._on_added = on_added
        # What the batch in hand has sent: our own message copies and the events.
        self._copies: list[Sent] = []
        self._events: list[Sent] = []

    def handle(self, delivery: Delivery) -> None:
        self.handle_batch([delivery])

    def handle_batch(self, deliveries: list[Delivery]) -> None:
        """Carry out commands that arrived together; each is acked once its outcome is safe.

        Every event and message copy of the batch is sent without waiting, and one ``settle``
        waits for all their confirms before any ack: one confirm round trip per batch.
        """
        taken = [_Taken(d, attempts_so_far(d.headers) + 1, CommandContext()) for d in deliveries]
        log.debug("handling %d command(s)", len(taken))
        self._copies, self._events = [], []
        valid: list[_Taken] = []
        for item in taken:
            try:
                item.command = parse_command(
                    item.delivery.body,
                    correlation_id=item.delivery.correlation_id,
                    message_id=item.delivery.message_id,
                    categories=self._cfg.categories,
                    context=item.context,
                )
            except InvalidCommand as exc:
                self._conclude(item, exc)
                continue
            valid.append(item)
        added: list[tuple[AddCommand, AddResult]] = []
        if valid:
            commands = [item.command for item in valid if item.command is not None]
            categories = self._cfg.categories
            # qBittorrent works while the `received` events go out.
            adding = self._run_qbit(
                lambda qbit: add_downloads(qbit, commands, categories.__getitem__)
            )
            for item in valid:
                if item.attempt == 1 and item.command is not None:
                    self._send(_received(item.command))
            outcomes = self._broker.wait_for(adding)
            for item, outcome in zip(valid, outcomes, strict=True):
                self._conclude(item, outcome)
                if isinstance(outcome, AddResult) and item.command is not None:
                    added.append((item.command, outcome))
        self._broker.settle()
        if not all(copy.routed for copy in self._copies):
            # Our own retry/dead-letter queue is gone (deleted by hand?): the message must not
            # be acked. BrokerUnavailable makes the consumer reconnect, which redeclares it.
            raise BrokerUnavailable("a queue of ours is missing; reconnecting to declare it again")
        for event in self._events:
            if not event.routed:
                log.warning(
                    "nobody is listening for %s: no queue is bound to exchange %r for it",
                    event.routing_key,
                    event.exchange,
                    extra={"routing_key": event.routing_key},
                )
        if added and self._on_added is not None:
            self._on_added(added)  # one state-file transaction for the whole batch
        # Last: every outcome above is safe now. Deliveries are handled in the order they came,
        # so the batch is exactly what is unacked up to its last delivery: one ack for all.
        self._broker.ack(taken[-1].delivery, and_earlier=True)

    def _conclude(self, item: _Taken, outcome: AddResult | Exception) -> None:
        """The one place where an outcome becomes a broker action (the ack follows later)."""
        fields: dict[str, Any] = {"attempt": item.attempt, "request_id": item.context.request_id}
        if item.context.magnet is not None:
            fields["hash"] = item.context.magnet.hash
        if isinstance(outcome, AddResult):
            assert item.command is not None
            self._send(_added(item.command, outcome))
            log.info(
                "added %s%s",
                outcome.torrent.name,
                " (already in qBittorrent)" if outcome.duplicate else "",
                extra={**fields, "duplicate": outcome.duplicate},
            )
        elif isinstance(outcome, InvalidCommand):
            self._dead_letter(item, outcome.reason, outcome.detail)
        elif isinstance(outcome, TransientError):
            if item.attempt >= self._cfg.rabbitmq.max_attempts:
                detail = f"gave up after {item.attempt} attempts; the last one failed: {outcome}"
                self._dead_letter(item, RETRIES_EXHAUSTED, detail)
            else:
                self._retry(item, str(outcome), fields)
        else:
            raise outcome

    # -- outcomes --------------------------------------------------------------------------

    def _retry(self, item: _Taken, error: str, fields: dict[str, Any]) -> None:
        headers = {ATTEMPTS_HEADER: item.attempt, "x-last-error": error}
        self._copies.append(
            self._broker.resend(item.delivery, self._cfg.rabbitmq.retry_queue, headers)
        )
        log.warning(
            "attempt %d of %d failed, retrying in %g s: %s",
            item.attempt,
            self._cfg.rabbitmq.max_attempts,
            self._cfg.rabbitmq.retry_delay_seconds,
            error,
            extra=fields,
        )

    def _dead_letter(self, item: _Taken, reason: str, detail: str) -> None:
        headers = {
            "x-error-reason": reason,
            "x-error-detail": detail,
            ATTEMPTS_HEADER: item.attempt,
            "x-failed-at": now_rfc3339(),
        }
        self._copies.append(
            self._broker.resend(item.delivery, self._cfg.rabbitmq.dead_letter_queue, headers)
        )
        context = item.context
        magnet = context.magnet
        self._send(
            Failed(
                request_id=context.request_id,
                hash=magnet.hash if magnet else None,
                infohash_v2=magnet.infohash_v2 if magnet else None,
                name=magnet.display_name if magnet else None,
                category=context.category,
                reason=reason,
                detail=detail,
            )
        )
        log.warning(
            "dead-lettered a command: %s: %s",
            reason,
            detail,
            extra={
                "reason": reason,
                "request_id": context.request_id,
                "hash": magnet.hash if magnet else None,
            },
        )

    def _send(self, event: Event) -> None:
        self._events.append(
            self._broker.send(
                self._cfg.rabbitmq.event_exchange,
                event.routing_key,
                event.to_json(),
                Outgoing(
                    message_id=event.event_id,
                    correlation_id=event.request_id,
                    timestamp=int(time.time()),
                    persistent=event.persistent,
                ),
            )
        )


def attempts_so_far(headers: Any) -> int:
    """How often this command was tried before; garbage in the header counts as never."""
    value = headers.get(ATTEMPTS_HEADER) if hasattr(headers, "get") else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _received(command: AddCommand) -> Received:
    magnet = command.magnet
    return Received(
        request_id=command.request_id,
        hash=magnet.hash,
        infohash_v2=magnet.infohash_v2,
        name=magnet.display_name,
        category=command.category,
        magnet=magnet.uri,
    )


def _added(command: AddCommand, result: AddResult) -> Added:
    magnet = command.magnet
    return Added(
        request_id=command.request_id,
        hash=magnet.hash,
        infohash_v2=magnet.infohash_v2,
        name=result.torrent.name,
        category=command.category,
        save_path=result.torrent.save_path,
        duplicate=result.duplicate,
    )
