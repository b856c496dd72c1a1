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

"Confirmed" is awaited once per batch, and the ack always comes last (``settling`` does both),
so a crash anywhere leaves the message in RabbitMQ; a redelivered command whose torrent was
already added is answered as a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from qbit_consumer.broker import Broker, Delivery
from qbit_consumer.broker.reconnect import Declarations
from qbit_consumer.commands.outcomes import (
    Done,
    Outcome,
    attempts_so_far,
    dead_letter_copy,
    retry_copy,
)
from qbit_consumer.commands.poison import PoisonGuard
from qbit_consumer.commands.settling import Settler, Taken, log_fields
from qbit_consumer.commands.table import CommandKind, command_name, parse_command
from qbit_consumer.commands.tracked import BatchView, Tracked
from qbit_consumer.config import Config
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.counters import Counters
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


class QbitRunner(Protocol):
    """Starts a function with the consumer's QbitClient on its own thread, off the broker
    connection's thread; the caller waits for the future with ``Broker.wait_for``."""

    def __call__(self, work: Callable[[QbitClient], T]) -> Future[T]: ...


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
        tracked: Tracked,
        counters: Counters,
    ) -> None:
        """``tracked``: the registry, where a batch's changes are recorded before its acks;
        ``counters``: where each command's outcome is counted once it is acked."""
        self._cfg = cfg
        self._broker = broker
        self._run_qbit = run_qbit
        self._declarations = declarations
        self._settler = Settler(cfg, broker, declarations, counters)
        self._guard = guard
        self._stopping = stopping
        self._tracked = tracked

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
        taken = [Taken(d, attempts_so_far(d.headers) + 1, CommandContext()) for d in deliveries]
        log.debug("handling %d command(s)", len(taken))
        if guarded and self._guard.killed_before(taken[0].delivery):
            self._dead_letter(
                taken[0],
                RETRIES_EXHAUSTED,
                "the service stopped unexpectedly twice while handling this command "
                "(a crash or a kill); it is not tried again",
            )
            valid: list[Taken] = []
        else:
            if guarded:
                self._guard.hold(taken[0].delivery)
            valid = [item for item in taken if self._parse(item)]
        if valid:
            self._carry_out(valid)
        self._settler.finish(taken)
        self._settle(taken)

    def _settle(self, items: list[Taken]) -> None:
        """Once every confirm is in: record what was added, ack what is safe, and give back
        (by reconnecting) the commands whose events the broker refused.

        A download is recorded only once its events are confirmed: a poll must not report it
        before its ``added`` went out.
        """
        refused = [item for item in items if item.refused]
        safe = [item for item in items if item not in refused]
        done = [item.done for item in safe if item.done is not None]
        if track := [d for outcome in done for d in outcome.track]:
            self._record(track)
        updated = [d for outcome in done for d in outcome.update]
        ended = [d for outcome in done for d in outcome.end]
        if updated or ended:
            self._tracked.commanded(updated=updated, ended=ended)
        self._settler.ack(
            [item for item in safe if not self._settler.is_held(item)], whole_batch=not refused
        )
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
        if held := self._settler.due_again():
            self._settler.finish(held)
            self._settle(held)

    # -- the steps of a batch --------------------------------------------------------------

    def _parse(self, item: Taken) -> bool:
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

    def _carry_out(self, valid: list[Taken]) -> None:
        """One job on the qBittorrent thread for the whole batch: each run of commands of the
        same kind is carried out together, the runs in the order they came (a remove after an
        add of the same torrent stays after it)."""
        runs: list[tuple[CommandKind[Any], list[Taken]]] = []
        for item in valid:
            assert item.kind is not None
            if runs and runs[-1][0] is item.kind:
                runs[-1][1].append(item)
            else:
                runs.append((item.kind, [item]))
        cfg, view = self._cfg, BatchView(self._tracked)

        def work(qbit: QbitClient) -> list[Outcome]:
            outcomes: list[Outcome] = []
            for kind, items in runs:
                done = kind.carry_out(qbit, [item.command for item in items], cfg, view)
                view.added(d for o in done if isinstance(o, Done) for d in o.track)
                outcomes += done
            return outcomes

        working = self._run_qbit(work)
        for item in valid:  # qBittorrent works while the `received` events go out
            assert item.kind is not None
            if item.attempt == 1 and item.kind.received is not None:
                self._settler.send(item.kind.received(item.command), item)
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
                self._tracked.track(added)
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

    # -- outcomes --------------------------------------------------------------------------

    def _conclude(self, item: Taken, outcome: Outcome | Exception) -> None:
        """The one place where an outcome becomes a broker action (the ack follows later)."""
        if isinstance(outcome, Done):
            item.done = outcome
            for event in outcome.events:
                self._settler.send(event, item)
            log.info(outcome.log_line, extra={**log_fields(item), **outcome.log_fields})
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

    def _dead_letter(self, item: Taken, reason: str, detail: str) -> None:
        item.copy = dead_letter_copy(
            self._cfg.rabbitmq, item.context, item.name, item.attempt, reason, detail
        )
