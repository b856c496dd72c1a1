"""The command handler's outcome mapping (``handling`` module docstring, CONTRACT section 4c),
against the stub broker and the fake qBittorrent: which events go out, what is copied where
with which headers, what is recorded, and what is acked, in which order."""

from __future__ import annotations

import re
import time
from pathlib import Path

import attrs
import pytest

from qbit_consumer.broker import reconnect
from qbit_consumer.broker.reconnect import Declarations
from qbit_consumer.broker.topology import build_topology
from qbit_consumer.commands.handling import CommandHandler
from qbit_consumer.commands.poison import PoisonGuard
from qbit_consumer.commands.table import COMMANDS
from qbit_consumer.config import Config, RabbitmqConfig
from qbit_consumer.counters import Counters
from qbit_consumer.errors import (
    QBITTORRENT_REJECTED,
    BrokerUnavailable,
    InvalidCommand,
    ShuttingDown,
    StateUnavailable,
    TransientError,
)
from qbit_consumer.model import Download
from tests.stubs import Clock, FakeQbit, StubBroker, delivery, run_now

H1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
H2 = "08ada5a7a6183aae1e09d831df6748d566095a10"
H3 = "dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c"
DLQ, RETRY = "downloads.commands.dlq", "downloads.commands.retry"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def add(h: str = H1, category: str = "movies", **fields: object) -> dict:
    return {"magnet": f"magnet:?xt=urn:btih:{h}&dn=Name-{h[:4]}", "category": category, **fields}


def retried(tried_before: int):
    """An add coming back from the retry queue after ``tried_before`` attempts."""
    headers = {"x-attempts": tried_before, "x-command": "downloads.add"}
    return delivery(add(H1), exchange="", headers=headers)


@attrs.define
class Bridge:
    """A handler wired to the stubs, and what it handed to ``record``."""

    cfg: Config
    broker: StubBroker = attrs.Factory(StubBroker)
    qbit: FakeQbit = attrs.Factory(FakeQbit)
    recorded: list[Download] = attrs.Factory(list)
    counters: Counters = attrs.Factory(Counters)
    #: How many more times ``record`` fails as if the state file could not be written.
    unwritable: int = 0
    stopping: bool = False
    handler: CommandHandler = attrs.field(init=False)

    # -- the registry, as the handler uses it (``commands.tracked.Tracked``) ------------------

    def track(self, downloads: list[Download]) -> int:
        if self.unwritable > 0:
            self.unwritable -= 1
            self.broker.note("record refused")
            raise StateUnavailable(Path("s.sqlite3"), "disk full")
        self.recorded.extend(downloads)
        self.broker.note("record")
        return len(downloads)

    def find(self, keys):
        return next((d for d in self.recorded if set(keys) & set(d.keys)), None)

    def was_tracked(self, keys) -> bool:
        return False

    def intend(self, download: Download, pending: str | None) -> Download:
        return download

    def commanded(self, *, updated=(), ended=()) -> None:
        self.broker.note("commanded")


def make_bridge(tmp_path: Path, cfg: Config | None = None) -> Bridge:
    bridge = Bridge(cfg or Config())
    topology = build_topology(bridge.cfg, tuple(COMMANDS))
    bridge.handler = CommandHandler(
        bridge.cfg,
        bridge.broker,
        run_now(bridge.qbit),
        declarations=Declarations(bridge.broker, topology),
        guard=PoisonGuard(tmp_path / "in-hand"),
        stopping=lambda: bridge.stopping,
        tracked=bridge,
        counters=bridge.counters,
    )
    return bridge


@pytest.fixture
def bridge(tmp_path: Path) -> Bridge:
    return make_bridge(tmp_path)


def only_copy(broker: StubBroker):
    [copy] = broker.copies
    return copy


# -- carried out ------------------------------------------------------------------------------


def test_a_valid_add_publishes_received_then_added_records_the_download_then_acks(bridge):
    command = delivery(add(H1, request_id="req-1"))

    bridge.handler.handle_batch([command])

    assert bridge.broker.event_names == ["downloads.received", "downloads.added"]
    received, added = bridge.broker.events
    assert (received["request_id"], received["hash"], received["category"]) == (
        "req-1",
        H1,
        "movies",
    )
    assert (added["request_id"], added["hash"], added["duplicate"]) == ("req-1", H1, False)
    assert [(d.hash, d.request_id) for d in bridge.recorded] == [(H1, "req-1")]
    assert bridge.broker.in_order("publish downloads.added", "settle", "record", "ack")
    assert bridge.broker.acked(command)
    assert bridge.broker.copies == []
    assert H1 in bridge.qbit.listed


def test_a_redelivered_add_publishes_no_second_received(bridge):
    second_attempt = retried(1)

    bridge.handler.handle_batch([second_attempt])

    assert bridge.broker.event_names == ["downloads.added"]
    assert bridge.broker.acked(second_attempt)


def test_an_add_of_a_torrent_qbittorrent_already_has_is_acked_as_a_duplicate(bridge):
    bridge.handler.handle_batch([delivery(add(H1))])
    again = delivery(add(H1))

    bridge.handler.handle_batch([again])

    [_, second] = bridge.broker.events_named("downloads.added")
    assert second["duplicate"] is True
    assert bridge.broker.acked(again) and bridge.broker.copies == []


def test_the_acks_wait_while_the_state_file_cannot_be_written(bridge):
    bridge.unwritable = 2
    command = delivery(add(H1))

    bridge.handler.handle_batch([command])

    assert bridge.broker.in_order("record refused", "record refused", "record", "ack")
    assert bridge.broker.waited == [1.0, 1.0]  # the connection serviced meanwhile
    assert [d.hash for d in bridge.recorded] == [H1]


def test_stopping_while_the_state_file_cannot_be_written_leaves_the_command_unacked(bridge):
    bridge.unwritable = 1
    bridge.stopping = True
    command = delivery(add(H1))

    with pytest.raises(ShuttingDown):
        bridge.handler.handle_batch([command])

    assert bridge.broker.acks == []


def test_an_add_whose_added_event_the_broker_refuses_is_not_acked_nor_recorded(bridge):
    bridge.broker.refused.add("downloads.added")
    command = delivery(add(H1))

    with pytest.raises(BrokerUnavailable):  # the consumer reconnects; the command comes back
        bridge.handler.handle_batch([command])

    assert not bridge.broker.acked(command)
    assert bridge.recorded == []


def test_a_refused_event_gives_back_its_own_command_and_the_rest_of_the_batch_is_acked(bridge):
    bridge.broker.refused.add("downloads.failed")
    bad, good = delivery(b"{not json"), delivery(add(H2))

    with pytest.raises(BrokerUnavailable):
        bridge.handler.handle_batch([bad, good])

    assert bridge.broker.acked(good) and not bridge.broker.acked(bad)
    assert [d.hash for d in bridge.recorded] == [H2]


# -- invalid: straight to the DLQ -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "routing_key", "reason"),
    [
        (b"{not json", "downloads.add", "invalid_json"),
        (add(category="not-a-category"), "downloads.add", "invalid_category"),
        (add(), "downloads.explode", "unknown_command"),
    ],
    ids=["invalid-json", "unknown-category", "unknown-routing-key"],
)
def test_an_invalid_command_is_copied_to_the_dlq_then_failed_then_acked(
    bridge, body, routing_key, reason
):
    command = delivery(body, routing_key=routing_key, correlation_id="corr-9")

    bridge.handler.handle_batch([command])

    copy = only_copy(bridge.broker)
    assert copy.routing_key == DLQ
    assert copy.body == command.body
    assert copy.headers["x-error-reason"] == reason
    assert isinstance(copy.headers["x-error-detail"], str) and copy.headers["x-error-detail"]
    assert copy.headers["x-attempts"] == 1
    assert RFC3339.match(copy.headers["x-failed-at"])
    assert copy.headers["x-command"] == routing_key
    [failed] = bridge.broker.events
    assert failed["event"] == "downloads.failed"
    assert (failed["reason"], failed["request_id"]) == (reason, "corr-9")
    assert bridge.broker.in_order(
        f"copy {DLQ}", "settle", "publish downloads.failed", "settle", "ack"
    )
    assert bridge.broker.acked(command)
    assert bridge.qbit.calls == []  # never handed to qBittorrent
    assert bridge.recorded == []


def test_no_failed_event_and_no_ack_while_the_dlq_refuses_the_copy(bridge):
    bridge.broker.refused.add(DLQ)
    command = delivery(b"{not json")

    bridge.handler.handle_batch([command])

    assert only_copy(bridge.broker).sent.nacked
    assert "downloads.failed" not in bridge.broker.event_names
    assert bridge.broker.acks == []  # held: unacked, offered again later


def test_a_held_command_is_offered_again_after_the_pause_then_failed_and_acked(bridge, monkeypatch):
    bridge.broker.refused.add(DLQ)
    command = delivery(b"{not json")
    bridge.handler.handle_batch([command])
    bridge.broker.refused.clear()

    bridge.handler.tend()  # the pause after a nack is not over: nothing is offered
    assert len(bridge.broker.copies) == 1
    # An hour later, as the reconnect module's clock (the Refusals pause) sees it.
    monkeypatch.setattr(reconnect, "time", Clock(monotonic=time.monotonic() + 3600))
    bridge.handler.tend()

    assert [c.routing_key for c in bridge.broker.copies] == [DLQ, DLQ]
    assert bridge.broker.event_names == ["downloads.failed"]
    assert bridge.broker.acked(command)


def test_a_dlq_copy_that_found_no_queue_declares_again_and_is_offered_at_the_next_tend(bridge):
    bridge.broker.unroutable.add(DLQ)  # the DLQ was deleted by hand
    command = delivery(b"{not json")
    bridge.handler.handle_batch([command])
    assert "declare" in bridge.broker.timeline
    assert bridge.broker.acks == []
    bridge.broker.unroutable.clear()  # declared again: it takes messages

    bridge.handler.tend()  # at once: a missing queue is not a refusal, no pause

    assert [c.routing_key for c in bridge.broker.copies] == [DLQ, DLQ]
    assert bridge.broker.event_names == ["downloads.failed"]
    assert bridge.broker.acked(command)


# -- transient: the retry queue, then the DLQ -------------------------------------------------


def test_a_transient_qbittorrent_failure_is_copied_to_the_retry_queue_and_acked(bridge):
    bridge.qbit.fail(TransientError("qBittorrent is unreachable"), method="torrents")
    command = delivery(add(H1))

    bridge.handler.handle_batch([command])

    copy = only_copy(bridge.broker)
    assert copy.routing_key == RETRY
    assert copy.headers["x-attempts"] == 1
    assert copy.headers["x-last-error"] == "qBittorrent is unreachable"
    assert copy.headers["x-command"] == "downloads.add"
    assert "x-error-reason" not in copy.headers
    assert "downloads.failed" not in bridge.broker.event_names
    assert "downloads.added" not in bridge.broker.event_names
    assert bridge.broker.in_order(f"copy {RETRY}", "settle", "ack")
    assert bridge.broker.acked(command)
    assert bridge.recorded == []


def test_the_attempt_before_the_last_still_goes_to_the_retry_queue(bridge):
    assert bridge.cfg.rabbitmq.max_attempts == 5
    bridge.qbit.fail(TransientError("HTTP 503"), method="torrents")
    command = retried(3)

    bridge.handler.handle_batch([command])

    copy = only_copy(bridge.broker)
    assert (copy.routing_key, copy.headers["x-attempts"]) == (RETRY, 4)
    assert bridge.broker.events == []
    assert bridge.broker.acked(command)


def test_the_last_attempt_goes_to_the_dlq_as_retries_exhausted(bridge):
    assert bridge.cfg.rabbitmq.max_attempts == 5
    bridge.qbit.fail(TransientError("HTTP 503"), method="torrents")
    command = retried(4)

    bridge.handler.handle_batch([command])

    copy = only_copy(bridge.broker)
    assert (copy.routing_key, copy.headers["x-attempts"]) == (DLQ, 5)
    assert copy.headers["x-error-reason"] == "retries_exhausted"
    assert "HTTP 503" in copy.headers["x-error-detail"]
    assert [e["reason"] for e in bridge.broker.events] == ["retries_exhausted"]
    assert bridge.broker.in_order(f"copy {DLQ}", "settle", "publish downloads.failed", "ack")
    assert bridge.broker.acked(command)


def test_qbittorrent_refusing_the_add_with_a_4xx_is_dead_lettered_not_retried(bridge):
    refusal = InvalidCommand(QBITTORRENT_REJECTED, "qBittorrent refused the torrent with HTTP 415")
    bridge.qbit.fail(refusal, method="add_magnet")
    command = delivery(add(H1))

    bridge.handler.handle_batch([command])

    # Were it treated as transient, the copy would go to the retry queue, without a reason.
    copy = only_copy(bridge.broker)
    assert (copy.routing_key, copy.headers["x-error-reason"]) == (DLQ, "qbittorrent_rejected")
    assert copy.headers["x-attempts"] == 1
    assert "x-last-error" not in copy.headers
    assert [e["reason"] for e in bridge.broker.events_named("downloads.failed")] == [
        "qbittorrent_rejected"
    ]
    assert bridge.broker.acked(command)


# -- batches ----------------------------------------------------------------------------------


def batch_of_three() -> list:
    return [
        delivery(add(H1), correlation_id="ok-1"),
        delivery(b"[]", correlation_id="bad"),
        delivery(add(H2, category="tv"), correlation_id="ok-2"),
    ]


def test_each_command_of_a_batch_gets_its_own_outcome_and_one_ack_covers_the_batch(bridge):
    first, bad, last = batch_of_three()

    bridge.handler.handle_batch([first, bad, last])

    added = bridge.broker.events_named("downloads.added")
    assert [(e["request_id"], e["hash"]) for e in added] == [("ok-1", H1), ("ok-2", H2)]
    [failed] = bridge.broker.events_named("downloads.failed")
    assert (failed["request_id"], failed["reason"]) == ("bad", "invalid_message")
    assert [c.routing_key for c in bridge.broker.copies] == [DLQ]
    assert sorted(d.hash for d in bridge.recorded) == sorted([H1, H2])
    assert bridge.broker.acks == [(last.delivery_tag, True)]


def test_each_acked_command_counts_once_by_outcome_with_its_confirmed_events(bridge):
    first, bad, last = batch_of_three()
    bridge.handler.handle_batch([first, bad, last])
    bridge.qbit.fail(TransientError("qBittorrent answered 503"), method="add_magnet")
    bridge.handler.handle_batch([delivery(add(H3))])
    bridge.handler.handle_batch([delivery(add(H1))])  # qBittorrent has it: a duplicate

    commands, events = bridge.counters.snapshot()
    assert commands == {"added": 2, "dead_lettered": 1, "retried": 1, "duplicate": 1}
    assert events == {
        "downloads.received": 4,  # not for the body that is no object
        "downloads.added": 3,
        "downloads.failed": 1,
    }


def test_a_held_command_counts_only_once_it_is_acked(bridge, monkeypatch):
    bridge.broker.refused.add(DLQ)
    bridge.handler.handle_batch([delivery(b"{not json")])
    assert bridge.counters.snapshot() == ({}, {})
    bridge.broker.refused.clear()
    monkeypatch.setattr(reconnect, "time", Clock(monotonic=time.monotonic() + 3600))
    bridge.handler.tend()

    assert bridge.counters.snapshot() == ({"dead_lettered": 1}, {"downloads.failed": 1})


def test_with_a_command_held_the_others_of_the_batch_are_acked_one_by_one(bridge):
    bridge.broker.refused.add(DLQ)
    first, bad, last = batch_of_three()

    bridge.handler.handle_batch([first, bad, last])

    assert bridge.broker.acks == [(first.delivery_tag, False), (last.delivery_tag, False)]
    assert not bridge.broker.acked(bad)


def test_a_transient_failure_of_one_group_does_not_touch_the_other(bridge):
    bridge.qbit.fail(TransientError("timeout"), method="add_magnet")  # the first group's add
    movies, tv = delivery(add(H1)), delivery(add(H3, category="tv"))

    bridge.handler.handle_batch([movies, tv])

    assert [(c.routing_key, c.body) for c in bridge.broker.copies] == [(RETRY, movies.body)]
    assert [e["hash"] for e in bridge.broker.events_named("downloads.added")] == [H3]
    assert bridge.broker.acked(movies) and bridge.broker.acked(tv)


# -- a command that killed the process ------------------------------------------------------


def test_a_redelivered_command_in_hand_when_the_process_died_is_dead_lettered_unread(tmp_path):
    command = delivery(add(H1), redelivered=True)
    PoisonGuard(tmp_path / "in-hand").hold(command)  # the previous run died holding it
    bridge = make_bridge(tmp_path)

    bridge.handler.handle_batch([command])

    assert only_copy(bridge.broker).headers["x-error-reason"] == "retries_exhausted"
    assert bridge.qbit.calls == []
    assert bridge.broker.acked(command)
    assert not (tmp_path / "in-hand").exists()


def test_a_redelivered_command_that_was_not_in_hand_is_carried_out(tmp_path):
    PoisonGuard(tmp_path / "in-hand").hold(delivery(add(H2), redelivered=True))
    bridge = make_bridge(tmp_path)
    innocent = delivery(add(H1), redelivered=True)

    bridge.handler.handle_batch([innocent])

    assert bridge.broker.event_names == ["downloads.received", "downloads.added"]
    assert bridge.broker.acked(innocent)
    assert not (tmp_path / "in-hand").exists()


# -- which command a message is ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "routing_key", "headers", "outcome"),
    [
        ("", "downloads.commands", {}, "downloads.added"),  # version 1: straight to the queue
        (
            "",
            "downloads.commands",
            {"x-command": "downloads.add", "x-attempts": 1},
            "downloads.added",
        ),
        ("", "downloads.commands", {"x-command": "downloads.explode"}, "downloads.failed"),
        ("downloads", "downloads.commands", {}, "downloads.failed"),  # through the exchange: a name
        # A publisher's own x-command on the command exchange names nothing: its routing key does.
        ("downloads", "downloads.add", {"x-command": "downloads.remove"}, "downloads.added"),
        ("downloads", "downloads.explode", {"x-command": "downloads.add"}, "downloads.failed"),
    ],
    ids=[
        "v1-publish-to-queue",
        "retry-copy",
        "named-by-header",
        "not-the-default-exchange",
        "a-publishers-header-on-the-exchange-is-ignored",
        "a-publishers-header-names-no-unknown-key",
    ],
)
def test_a_message_without_a_routing_key_name_is_named_by_header_or_is_an_add(
    tmp_path, exchange, routing_key, headers, outcome
):
    # A queue named unlike the add's routing key, so that only the rules can make it an add.
    bridge = make_bridge(
        tmp_path, Config(rabbitmq=RabbitmqConfig(command_queue="downloads.commands"))
    )
    command = delivery(add(H1), exchange=exchange, routing_key=routing_key, headers=headers)

    bridge.handler.handle_batch([command])

    assert bridge.broker.event_names[-1] == outcome
    if outcome == "downloads.failed":
        assert bridge.broker.events[-1]["reason"] == "unknown_command"
    assert bridge.broker.acked(command)


# -- the unforeseen -----------------------------------------------------------------------------


def test_an_unexpected_exception_while_parsing_is_dead_lettered_as_invalid_message(
    bridge, monkeypatch
):
    row = COMMANDS["downloads.add"]

    def parse(data, context, cfg):
        if data["category"] == "boom":
            raise KeyError("nobody foresaw this")
        return row.parse(data, context, cfg)

    monkeypatch.setitem(COMMANDS, "downloads.add", attrs.evolve(row, parse=parse))
    boom, fine = delivery(add(H1, category="boom"), correlation_id="r-boom"), delivery(add(H2))

    bridge.handler.handle_batch([boom, fine])

    copy = only_copy(bridge.broker)
    assert (copy.body, copy.headers["x-error-reason"]) == (boom.body, "invalid_message")
    assert "KeyError" in copy.headers["x-error-detail"]
    [failed] = bridge.broker.events_named("downloads.failed")
    assert (failed["request_id"], failed["reason"]) == ("r-boom", "invalid_message")
    assert [e["hash"] for e in bridge.broker.events_named("downloads.added")] == [H2]
    assert bridge.broker.acked(boom) and bridge.broker.acked(fine)
