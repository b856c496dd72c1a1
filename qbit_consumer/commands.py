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

The ack always comes last, so a crash anywhere leaves the message in RabbitMQ; a redelivered
command whose torrent was already added is answered as a duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

import attrs

from qbit_consumer.broker import Broker, Delivery, Outgoing
from qbit_consumer.config import Config
from qbit_consumer.errors import (
    QBITTORRENT_REJECTED,
    RETRIES_EXHAUSTED,
    BrokerUnavailable,
    InvalidCommand,
    TransientError,
)
from qbit_consumer.events import Added, Event, Failed, Received, now_rfc3339
from qbit_consumer.messages import MANAGED_TAG, AddCommand, CommandContext, parse_command
from qbit_consumer.qbit import QbitClient, Torrent

log = logging.getLogger(__name__)
T = TypeVar("T")

#: qBittorrent adds torrents asynchronously; how long a new one may take to be listed.
LIST_TIMEOUT_SECONDS: Final = 15.0
ATTEMPTS_HEADER: Final = "x-attempts"


class QbitRunner(Protocol):
    """Runs a function with the consumer's QbitClient, off the broker connection's thread."""

    def __call__(self, work: Callable[[QbitClient], T]) -> T: ...


@attrs.frozen(kw_only=True)
class AddResult:
    torrent: Torrent
    duplicate: bool


class CommandHandler:
    """Handles deliveries one at a time, on the consumer thread."""

    def __init__(
        self,
        cfg: Config,
        broker: Broker,
        run_qbit: QbitRunner,
        on_added: Callable[[AddCommand, AddResult], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._broker = broker
        self._run_qbit = run_qbit
        self._on_added = on_added

    def handle(self, delivery: Delivery) -> None:
        attempt = attempts_so_far(delivery.headers) + 1
        context = CommandContext()
        fields: dict[str, Any] = {"attempt": attempt}
        try:
            command = parse_command(
                delivery.body,
                correlation_id=delivery.correlation_id,
                message_id=delivery.message_id,
                categories=self._cfg.categories,
                context=context,
            )
            fields.update(hash=command.magnet.hash, request_id=command.request_id)
            if attempt == 1:
                self._publish(_received(command))
            save_path = self._cfg.categories[command.category]
            result = self._run_qbit(lambda qbit: add_download(qbit, command, save_path))
            self._publish(_added(command, result))
            if self._on_added is not None:
                self._on_added(command, result)
            log.info(
                "added %s%s",
                result.torrent.name,
                " (already in qBittorrent)" if result.duplicate else "",
                extra={**fields, "duplicate": result.duplicate},
            )
        except InvalidCommand as exc:
            self._dead_letter(delivery, exc.reason, exc.detail, attempt, context)
        except TransientError as exc:
            if attempt >= self._cfg.rabbitmq.max_attempts:
                detail = f"gave up after {attempt} attempts; the last one failed: {exc}"
                self._dead_letter(delivery, RETRIES_EXHAUSTED, detail, attempt, context)
            else:
                self._retry(delivery, attempt, str(exc), fields)
        self._broker.ack(delivery)

    # -- outcomes --------------------------------------------------------------------------

    def _retry(self, delivery: Delivery, attempt: int, error: str, fields: dict[str, Any]) -> None:
        headers = {ATTEMPTS_HEADER: attempt, "x-last-error": error}
        self._require_routed(
            self._broker.republish(delivery, self._cfg.rabbitmq.retry_queue, headers)
        )
        log.warning(
            "attempt %d of %d failed, retrying in %g s: %s",
            attempt,
            self._cfg.rabbitmq.max_attempts,
            self._cfg.rabbitmq.retry_delay_seconds,
            error,
            extra=fields,
        )

    def _dead_letter(
        self, delivery: Delivery, reason: str, detail: str, attempt: int, context: CommandContext
    ) -> None:
        headers = {
            "x-error-reason": reason,
            "x-error-detail": detail,
            ATTEMPTS_HEADER: attempt,
            "x-failed-at": now_rfc3339(),
        }
        self._require_routed(
            self._broker.republish(delivery, self._cfg.rabbitmq.dead_letter_queue, headers)
        )
        magnet = context.magnet
        self._publish(
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

    def _publish(self, event: Event) -> None:
        routed = self._broker.publish(
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
        if not routed:
            log.warning(
                "nobody is listening for %s: no queue is bound to exchange %r for it",
                event.routing_key,
                self._cfg.rabbitmq.event_exchange,
                extra={"routing_key": event.routing_key, "hash": event.hash},
            )

    def _require_routed(self, routed: bool) -> None:
        if not routed:
            # Our own retry/dead-letter queue is gone (deleted by hand?): the message must not
            # be acked. BrokerUnavailable makes the consumer reconnect, which redeclares it.
            raise BrokerUnavailable("a queue of ours is missing; reconnecting to declare it again")


def add_download(qbit: QbitClient, command: AddCommand, save_path: str) -> AddResult:
    """Make sure qBittorrent holds the torrent of ``command``; runs on the qBittorrent thread.

    A torrent qBittorrent already has is a duplicate, not an error: it gets our tags (its
    category and save path stay as they are: we never move a user's files).
    """
    magnet = command.magnet
    tags = [MANAGED_TAG, *command.tags]
    existing = _find(qbit, command)
    if existing is not None:
        qbit.add_tags(existing.id, tags)
        return AddResult(torrent=existing, duplicate=True)

    qbit.ensure_category(command.category, save_path)
    accepted = qbit.add_magnet(
        magnet.uri, category=command.category, tags=tags, save_path=save_path
    )
    if not accepted:
        # A hybrid torrent added earlier from a v1-only magnet is re-keyed to its v2 id once
        # its metadata arrives; hashes= cannot find it by v1, a full listing can.
        existing = _find(qbit, command) or next(
            (t for t in qbit.all_torrents() if t.matches(magnet.keys)), None
        )
        if existing is None:
            raise InvalidCommand(QBITTORRENT_REJECTED, "qBittorrent refused the magnet link")
        qbit.add_tags(existing.id, tags)
        return AddResult(torrent=existing, duplicate=True)

    deadline = time.monotonic() + LIST_TIMEOUT_SECONDS
    pause = 0.005  # qBittorrent usually lists it within milliseconds; back off to 0.1 s
    while time.monotonic() < deadline:
        torrent = _find(qbit, command)
        if torrent is not None:
            return AddResult(torrent=torrent, duplicate=False)
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    raise TransientError(
        f"qBittorrent accepted the magnet but did not list it within {LIST_TIMEOUT_SECONDS:g} s"
    )


def _find(qbit: QbitClient, command: AddCommand) -> Torrent | None:
    keys = command.magnet.keys
    return next((t for t in qbit.torrents(keys) if t.matches(keys)), None)


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
