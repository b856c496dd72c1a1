"""Carrying out commands, a batch at a time, and deciding what becomes of each message.

Which command a message is, how its body is read and how it is carried out comes from the
dispatch table (``table``); everything else happens here, alike for every command. This is the
one place where our error types turn into broker actions:

=====================  ===============================================================
outcome                what happens to the message
=====================  ===============================================================
``Done``               its events (``received`` + ``added`` for an add) confirmed and
                       its downloads recorded, then ack
``InvalidCommand``     copy to the DLQ; once it is confirmed, ``failed``; then ack
``TransientError``     copy to the retry queue (confirmed), then ack; on the last
                       attempt copy to the DLQ as ``retries_exhausted`` instead
``BrokerUnavailable``  no ack: the broker redelivers it after we reconnect
``ShuttingDown``       no ack: the command goes back to the queue when we close
a refused event        no ack (the broker nacked a ``received``, ``added`` or ``failed``
                       event): the commands of the batch that are safe are acked, the
                       connection is closed, and the others come back after a reconnect
                       (a dead-lettered one may then reach the DLQ twice: at least once)
=====================  ===============================================================

"Confirmed" is awaited once per batch: everything a batch publishes goes out without waiting,
then one ``settle`` waits for all of its confirms; the ``failed`` events of dead-lettered
commands follow in a second round, because a ``failed`` event must never go out for a copy the
dead-letter queue did not take. The ack always comes last, so a crash anywhere leaves the
message in RabbitMQ; a redelivered command whose torrent was already added is answered as a
duplicate.

A copy the broker refuses (a nack: a dead-letter or retry queue with a ``reject-publish``
length limit, or a failing queue) is neither acked nor dropped: its command is held, unacked,
and its copy is offered again with a growing pause, while the other commands go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, Protocol, TypeVar

import attrs

from qbit_consumer.broker import Broker, Delivery, Sent
from qbit_consumer.broker.publishing import nobody_listening, send_event
from qbit_consumer.broker.reconnect import Declarations, Refusals
from qbit_consumer.commands.outcomes import (
    Copy,
    Done,
    Outcome,
    attempts_so_far,
    dead_letter_copy,
    retry_copy,
)
from qbit_consumer.commands.poison import PoisonGuard
from qbit_consumer.commands.table import CommandKind, command_name, parse_command
from qbit_consumer.config import Config
from qbit_consumer.contract.events import Envelope, Event
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.errors import (
    INVALID_MESSAGE,
    RETRIES_EXHAUSTED,
    BrokerUnavailable,
    InvalidCommand,
    ShuttingDown,
    StateUnavailable,
    TransientError,
)
from qbit_consumer.model import Download
from qbit_consumer.qbit import QbitClient

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Pauses between offers of a refused copy: from 1 s up to this many seconds.
REFUSED_BACKOFF_CAP_SECONDS: Final = 60.0


class QbitRunner(Protocol):
    """Starts a function with the consumer's QbitClient on its own thread, off the broker
    connection's thread; the caller waits for the future with ``Broker.wait_for``."""

    def __call__(self, work: Callable[[QbitClient], T]) -> Future[T]: ...


@attrs.define(eq=False)  # compared by identity: two equal commands are still two messages
class _Taken:
    """One delivery of a batch and what is known of it."""

    delivery: Delivery
    attempt: int
    context: CommandContext
    name: str | None = None  # the command's routing key
    kind: CommandKind[Any] | None = None
    command: Any = None  # what ``kind.parse`` made of the body
    copy: Copy | None = None
    sent: Sent | None = None  # the copy's
    done: Done | None = None
    events: list[Sent] = attrs.Factory(list)  # what it published, confirmed at the next settle

    @property
    def refused(self) -> bool:
        """Whether the broker nacked one of its events (a queue bound to the event exchange
        is full and rejects publishes): its outcome is not safe."""
        return any(sent.nacked for sent in self.events)


class CommandHandler:
    """Handles deliveries, a batch at a time, on the consumer thread."""

    def __init__(
        self,
        cfg: Config,
        broker: Broker,
        run_qbit: QbitRunner,
        *,
        declarations: Declarations,
        guard: PoisonGuard,
        stopping: Callable[[], bool],
        record: Callable[[list[Download]], None],
    ) -> None:
        """``record`` starts tracking what a batch added, before its acks (the registry)."""
        self._cfg = cfg
        self._broker = broker
        self._run_qbit = run_qbit
        self._declarations = declarations
        self._guard = guard
        self._stopping = stopping
        self._record_downloads = record
        # What the batch in hand has published, and for which command.
        self._events: list[tuple[Envelope, Sent, _Taken]] = []
        # Commands whose copy the broker refused: unacked, offered again after a pause.
        self._held: list[_Taken] = []
        self._refusals = Refusals(cap=REFUSED_BACKOFF_CAP_SECONDS)

    def handle_batch(self, deliveries: list[Delivery]) -> None:
        """Carry out commands that arrived together; each is acked once its outcome is safe.

        A redelivered command comes alone (see ``consumer``): if the process died while it
        was in hand alone before, it is dead-lettered without being looked at again.
        """
        guarded = len(deliveries) == 1 and deliveries[0].redelivered
        try:
            self._handle(deliveries, guarded)
        except (BrokerUnavailable, ShuttingDown):
            # Not a crash: the command goes back to the queue without blame.
            if guarded:
                self._guard.release()
            raise
        if guarded:
            self._guard.release()

    def _handle(self, deliveries: list[Delivery], guarded: bool) -> None:
        taken = [_Taken(d, attempts_so_far(d.headers) + 1, CommandContext()) for d in deliveries]
        log.debug("handling %d command(s)", len(taken))
        self._events = []
        if guarded and self._guard.killed_before(taken[0].delivery):
            self._dead_letter(
                taken[0],
                RETRIES_EXHAUSTED,
                "the service stopped unexpectedly twice while handling this command "
                "(a crash or a kill); it is not tried again",
            )
            valid: list[_Taken] = []
        else:
            if guarded:
                self._guard.hold(taken[0].delivery)
            valid = [item for item in taken if self._parse(item)]
        if valid:
            self._carry_out(valid)
        self._finish(taken)
        self._settle(taken)

    def _settle(self, items: list[_Taken]) -> None:
        """Once every confirm is in: record what was added, ack what is safe, and give back
        (by reconnecting) the commands whose events the broker refused.

        A download is recorded only once its events are confirmed: a poll must not report it
        before its ``added`` went out.
        """
        refused = [item for item in items if item.refused]
        safe = [item for item in items if item not in refused]
        if track := [d for item in safe if item.done is not None for d in item.done.track]:
            self._record(track)
        self._ack([item for item in safe if item not in self._held], whole_batch=not refused)
        if refused:
            log.error(
                "RabbitMQ refused the events of %d command(s) (a queue bound to %r is full and "
                "rejects publishes?): they go back to the queue and come again after a reconnect",
                len(refused),
                self._cfg.rabbitmq.event_exchange,
            )
            raise BrokerUnavailable("the broker refused events of this batch (nack)")

    def tend(self) -> None:
        """Between batches: offer held copies again, and declare the topology again when due
        (RabbitMQ tells nobody that a binding was deleted)."""
        self._declarations.tend()
        self._retry_held()

    def _retry_held(self) -> None:
        """Offer the copies of held commands again, once their pause is over."""
        if not self._held or self._refusals.remaining() > 0:
            return
        held, self._held = self._held, []
        self._events = []
        self._finish(held)
        self._settle(held)

    # -- the steps of a batch --------------------------------------------------------------

    def _parse(self, item: _Taken) -> bool:
        delivery = item.delivery
        item.name = command_name(delivery, self._cfg.rabbitmq.command_queue)
        try:
            item.kind, item.command = parse_command(
                item.name,
                delivery.body,
                correlation_id=delivery.correlation_id,
                message_id=delivery.message_id,
                cfg=self._cfg,
                context=item.context,
            )
        except InvalidCommand as exc:
            self._conclude(item, exc)
            return False
        except Exception as exc:  # a body our parser did not foresee: never a crash
            log.exception("reading a command failed unexpectedly; dead-lettering it")
            item.context = CommandContext(request_id=item.context.request_id)
            self._dead_letter(
                item, INVALID_MESSAGE, f"the command could not be read ({type(exc).__name__})"
            )
            return False
        return True

    def _carry_out(self, valid: list[_Taken]) -> None:
        """One job on the qBittorrent thread for the whole batch: each run of commands of the
        same kind is carried out together, the runs in the order they came (a remove after an
        add of the same torrent stays after it)."""
        runs: list[tuple[CommandKind[Any], list[_Taken]]] = []
        for item in valid:
            assert item.kind is not None
            if runs and runs[-1][0] is item.kind:
                runs[-1][1].append(item)
            else:
                runs.append((item.kind, [item]))
        cfg = self._cfg

        def work(qbit: QbitClient) -> list[Outcome]:
            return [
                outcome
                for kind, items in runs
                for outcome in kind.carry_out(qbit, [item.command for item in items], cfg)
            ]

        working = self._run_qbit(work)
        for item in valid:  # qBittorrent works while the `received` events go out
            assert item.kind is not None
            if item.attempt == 1 and item.kind.received is not None:
                self._send(item.kind.received(item.command), item)
        outcomes = self._broker.wait_for(working, self._stopping)
        for item, outcome in zip(valid, outcomes, strict=True):
            self._conclude(item, outcome)

    def _record(self, added: list[Download]) -> None:
        """Start tracking what this batch added (one state-file transaction), before the ack.

        While the state file cannot be written the acks wait here, the connection serviced:
        acked but unrecorded, a download would be forgotten by a restart; unacked, its command
        comes back after one and is answered as a duplicate.
        """
        waiting = False
        while True:
            try:
                self._record_downloads(added)
                return
            except StateUnavailable as exc:
                if not waiting:
                    log.error(
                        "the state file cannot be written (%s): %d command(s) stay unacked "
                        "until it can",
                        exc.reason,
                        len(added),
                    )
                    waiting = True
            if self._stopping():
                raise ShuttingDown("stopping while the state file cannot be written")
            self._broker.idle(1.0)

    def _finish(self, items: list[_Taken]) -> None:
        """Send the copies, wait for every confirm, then the ``failed`` events of the copies
        the dead-letter queue took. Refused copies put their command on hold."""
        copies = [item for item in items if item.copy is not None]
        for item in copies:
            assert item.copy is not None
            item.sent = self._broker.resend(item.delivery, item.copy.queue, item.copy.headers)
        self._broker.settle()
        if any(not item.sent.routed for item in copies if item.sent is not None):
            # A queue of ours is gone (deleted by hand?): declare it again, offer at once.
            log.warning("a retry or dead-letter queue is missing; declaring the topology again")
            self._declarations.declare()
        refused = [item for item in copies if item.sent and not _safe(item.sent)]
        taken = [item for item in copies if item not in refused]
        for item in taken:
            assert item.copy is not None
            log.warning(item.copy.log_line, extra=_log_fields(item))
            if item.copy.failed is not None:
                self._send(item.copy.failed, item)
        self._broker.settle()
        self._reroute_events()
        self._hold(refused, any(item.sent and item.sent.nacked for item in refused))

    def _hold(self, refused: list[_Taken], nacked: bool) -> None:
        """Refused copies keep their commands unacked. A nack starts (or lengthens) a pause;
        a copy that found no queue is offered again at once, its queue declared again."""
        if not refused:
            if not self._held and self._refusals.accepted():
                log.warning("the retry and dead-letter queues take messages again")
            return
        self._held.extend(refused)
        if nacked and self._refusals.refused():
            log.error(
                "RabbitMQ refuses copies for the retry or dead-letter queue (a length limit "
                "with reject-publish, or a resource alarm?): %d command(s) stay unacked and "
                "are offered again with a growing pause; other commands go on",
                len(refused),
            )

    def _ack(self, done: list[_Taken], *, whole_batch: bool = True) -> None:
        """Deliveries are taken in order, so when nothing is held and the whole batch is done
        it is exactly what is unacked up to its last delivery: one ack for all. Otherwise one
        ack each."""
        if not done:
            return
        if whole_batch and not self._held:
            self._broker.ack(done[-1].delivery, and_earlier=True)
            return
        for item in done:
            self._broker.ack(item.delivery)

    def _reroute_events(self) -> None:
        """Events no queue took: the event exchange may have been deleted and declared again
        without its bindings (the platform's). Declare ours again and send them once more;
        what is still unroutable then has nobody listening."""
        unrouted = [(event, item) for event, sent, item in self._events if not sent.routed]
        self._events = []
        if unrouted and self._declarations.reroute():
            for event, item in unrouted:
                self._send(event, item)
            self._broker.settle()
            unrouted = [(event, item) for event, sent, item in self._events if not sent.routed]
            self._events = []
        for event, _item in unrouted:
            nobody_listening(event, self._cfg.rabbitmq.event_exchange)

    # -- outcomes --------------------------------------------------------------------------

    def _conclude(self, item: _Taken, outcome: Outcome | Exception) -> None:
        """The one place where an outcome becomes a broker action (the ack follows later)."""
        if isinstance(outcome, Done):
            item.done = outcome
            for event in outcome.events:
                self._send(event, item)
            log.info(outcome.log_line, extra={**_log_fields(item), **outcome.log_fields})
        elif isinstance(outcome, InvalidCommand):
            self._dead_letter(item, outcome.reason, outcome.detail)
        elif isinstance(outcome, TransientError):
            if item.attempt >= self._cfg.rabbitmq.max_attempts:
                detail = f"gave up after {item.attempt} attempts; the last one failed: {outcome}"
                self._dead_letter(item, RETRIES_EXHAUSTED, detail)
            else:
                item.copy = retry_copy(self._cfg.rabbitmq, item.name, item.attempt, str(outcome))
        else:
            raise outcome

    def _dead_letter(self, item: _Taken, reason: str, detail: str) -> None:
        item.copy = dead_letter_copy(
            self._cfg.rabbitmq, item.context, item.name, item.attempt, reason, detail
        )

    def _send(self, event: Event | Envelope, item: _Taken) -> None:
        envelope = event if isinstance(event, Envelope) else event.envelope()
        sent = send_event(self._broker, self._cfg.rabbitmq.event_exchange, envelope)
        self._events.append((envelope, sent, item))
        item.events.append(sent)


def _safe(sent: Sent) -> bool:
    return sent.confirmed and not sent.nacked and sent.routed


def _log_fields(item: _Taken) -> dict[str, Any]:
    fields: dict[str, Any] = {"attempt": item.attempt, "request_id": item.context.request_id}
    if item.context.hash is not None:
        fields["hash"] = item.context.hash
    if item.copy is not None and item.copy.failed is not None:
        fields["reason"] = item.copy.failed.reason
    return fields
