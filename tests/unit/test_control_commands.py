"""downloads.remove / pause / resume through the command handler, against the stub broker, the
fake qBittorrent and a real registry on a real state file (CONTRACT section 4b): which events
go out and say who did it, what is dead-lettered why, what the tracked set becomes, and that a
repeat changes nothing."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from qbit_consumer.broker.reconnect import Declarations
from qbit_consumer.broker.topology import build_topology
from qbit_consumer.commands.handling import CommandHandler
from qbit_consumer.commands.poison import PoisonGuard
from qbit_consumer.commands.table import COMMANDS
from qbit_consumer.config import CommandsConfig, Config
from qbit_consumer.contract.messages import MANAGED_TAG
from qbit_consumer.counters import Counters
from qbit_consumer.model import PENDING_PAUSE, PENDING_REMOVE_FILES, Download
from qbit_consumer.tracking import lifecycle
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State
from tests.stubs import FakeQbit, StubBroker, delivery, run_now, torrent

H1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
H2 = "08ada5a7a6183aae1e09d831df6748d566095a10"
V2 = "32bcc50c8f5385308227700e85b55929100c875f76ea37a65c595ad930391ac4"
NOW = 1_000.0


@attrs.define
class Setup:
    cfg: Config
    registry: Registry
    broker: StubBroker = attrs.Factory(StubBroker)
    qbit: FakeQbit = attrs.Factory(FakeQbit)
    handler: CommandHandler = attrs.field(init=False)

    def send(self, routing_key: str, body: dict, **kwargs) -> None:
        self.handler.handle_batch([delivery(body, routing_key=routing_key, **kwargs)])

    def managed(self, infohash: str, request_id: str = "added-it", **fields) -> None:
        """A torrent this service added and tracks."""
        self.qbit.listed[infohash] = torrent(infohash, **fields)
        self.qbit.tags[infohash] = {MANAGED_TAG}
        self.registry.track(
            [Download.added(hash=infohash, qbit_id=infohash, request_id=request_id, name="n")]
        )

    def failed(self) -> dict:
        [event] = self.broker.events_named("downloads.failed")
        return event


def setup(tmp_path: Path, **commands) -> Setup:
    cfg = Config(commands=CommandsConfig(**commands))
    state = State(tmp_path / "state.sqlite3")
    s = Setup(cfg, Registry(state, PublishQueue()))
    s.handler = CommandHandler(
        cfg,
        s.broker,
        run_now(s.qbit),
        declarations=Declarations(s.broker, build_topology(cfg, tuple(COMMANDS))),
        guard=PoisonGuard(tmp_path / "in-hand"),
        stopping=lambda: False,
        tracked=s.registry,
        counters=Counters(),
    )
    return s


@pytest.fixture
def s(tmp_path: Path) -> Setup:
    return setup(tmp_path)


# -- remove -----------------------------------------------------------------------------------


@pytest.mark.parametrize("delete_files", [False, True])
def test_remove_takes_the_torrent_out_reports_it_once_by_command_and_ends_tracking(s, delete_files):
    s.managed(H1)
    body = {"hash": H1, "delete_files": delete_files} if delete_files else {"hash": H1}

    s.send("downloads.remove", body, message_id=None)

    [removed] = s.broker.events
    assert removed["event"] == "downloads.removed"
    assert (removed["reason"], removed["files_deleted"]) == ("command", delete_files)
    assert removed["request_id"] == "added-it"  # none of its own: the download's
    assert s.qbit.removed_with_files == {H1: delete_files}
    assert s.registry.find([H1]) is None and s.registry.was_tracked([H1])
    assert s.broker.in_order("publish downloads.removed", "settle", "ack")


def test_a_repeated_remove_is_acked_without_a_second_event(s):
    s.managed(H1)
    s.send("downloads.remove", {"hash": H1})
    again = delivery({"hash": H1}, routing_key="downloads.remove")

    s.handler.handle_batch([again])

    assert s.broker.event_names == ["downloads.removed"]
    assert s.broker.acked(again) and s.broker.copies == []


def test_a_remove_of_a_hash_never_seen_is_dead_lettered_not_found_naming_the_command(s):
    s.send("downloads.remove", {"hash": H2.upper()})

    [copy] = s.broker.copies
    assert copy.headers["x-error-reason"] == "not_found"
    failed = s.failed()
    assert (failed["reason"], failed["command"], failed["hash"]) == (
        "not_found",
        "downloads.remove",
        H2,
    )
    assert "never tracked" in failed["detail"]


def test_an_unmanaged_torrent_is_not_touched_unless_the_config_allows_it(s, tmp_path):
    s.qbit.listed[H2] = torrent(H2)  # added in qBittorrent's UI: no tag
    s.send("downloads.pause", {"hash": H2})
    assert s.failed()["reason"] == "not_managed"
    assert s.qbit.listed[H2].state == "downloading"

    free = setup(tmp_path / "free", control_unmanaged=True)
    free.qbit.listed[H2] = torrent(H2)
    free.send("downloads.remove", {"hash": H2})
    [removed] = free.broker.events
    assert (removed["hash"], removed["reason"], removed["category"]) == (H2, "command", None)
    assert H2 not in free.qbit.listed


def test_a_hybrid_named_by_its_v1_hash_is_found_under_its_v2_id(s, tmp_path):
    s.qbit.listed[V2[:40]] = torrent(V2[:40], infohash_v1=H1, infohash_v2=V2)
    s.qbit.tags[V2[:40]] = {MANAGED_TAG}

    s.send("downloads.remove", {"hash": H1})

    [removed] = s.broker.events
    assert (removed["hash"], removed["infohash_v2"]) == (H1, V2)
    assert s.qbit.listed == {}


def test_an_add_and_a_remove_of_one_torrent_in_one_batch_are_carried_out_in_order(s):
    magnet = {"magnet": f"magnet:?xt=urn:btih:{H1}", "category": "movies", "request_id": "r"}
    s.handler.handle_batch(
        [
            delivery(magnet),
            delivery({"hash": H1}, routing_key="downloads.remove", message_id=None),
        ]
    )

    assert s.broker.event_names == ["downloads.received", "downloads.added", "downloads.removed"]
    assert s.broker.events[-1]["request_id"] == "r"
    assert s.qbit.listed == {}
    assert s.registry.find([H1]) is None and s.registry.was_tracked([H1])


# -- pause and resume -------------------------------------------------------------------------


def test_pause_then_resume_report_each_once_by_command_and_a_repeat_changes_nothing(s):
    s.managed(H1)

    s.send("downloads.pause", {"hash": H1})
    s.send("downloads.pause", {"hash": H1})
    s.send("downloads.resume", {"hash": H1})
    s.send("downloads.resume", {"hash": H1})

    assert s.broker.event_names == ["downloads.paused", "downloads.resumed"]
    paused, resumed = s.broker.events
    assert (paused["by"], paused["state"]) == ("command", "stoppedDL")
    assert (resumed["by"], resumed["state"]) == ("command", "downloading")
    assert s.qbit.calls.count("pause_torrent") == s.qbit.calls.count("resume_torrent") == 1
    held = s.registry.find([H1])
    assert held is not None and not held.paused and held.pending is None
    assert len(s.broker.acks) == 4 and s.broker.copies == []


def test_a_pause_done_in_qbittorrent_before_the_command_is_reported_once_as_external(s):
    s.managed(H1)
    s.qbit.pause(H1)  # by hand, not seen by a poll yet

    s.send("downloads.pause", {"hash": H1})
    s.send("downloads.pause", {"hash": H1})

    [paused] = s.broker.events
    assert paused["by"] == "external"
    assert "pause_torrent" not in s.qbit.calls


def test_a_hash_is_read_as_history_reads_it_any_form_whitespace_around_it_ignored(s):
    s.qbit.listed[V2[:40]] = torrent(V2[:40], infohash_v1=H1, infohash_v2=V2)
    s.qbit.tags[V2[:40]] = {MANAGED_TAG}

    s.send("downloads.pause", {"hash": f" {V2.upper()}\n"})

    [paused] = s.broker.events
    assert (paused["hash"], paused["by"]) == (H1, "command")
    assert s.qbit.listed[V2[:40]].state in {"pausedDL", "stoppedDL"}


@pytest.mark.parametrize(
    ("routing_key", "body", "reason"),
    [
        ("downloads.remove", {}, "invalid_message"),
        ("downloads.pause", {"hash": "not-a-hash"}, "invalid_message"),
        ("downloads.resume", {"hash": 42}, "invalid_message"),
        ("downloads.remove", {"hash": H1, "delete_files": "yes"}, "invalid_message"),
        ("downloads.explode", {"hash": H1}, "unknown_command"),
    ],
)
def test_a_body_a_command_cannot_carry_is_dead_lettered_with_its_reason(
    s, routing_key, body, reason
):
    s.managed(H1)
    s.send(routing_key, body)

    failed = s.failed()
    assert failed["reason"] == reason
    assert failed["command"] == routing_key
    assert s.qbit.listed[H1].state == "downloading"


# -- after a crash between qBittorrent's call and the event -----------------------------------


def test_a_change_noted_before_a_crash_is_reported_by_the_poll_as_the_commands(s):
    s.managed(H1)
    held = s.registry.find([H1])
    assert held is not None
    noted = s.registry.intend(held, PENDING_PAUSE)
    assert s.registry.poll_snapshot()[1] == {H1}  # the poller leaves it to the command

    seen = lifecycle.observe(noted, torrent(H1, state="stoppedDL"), NOW, 1800)
    [paused] = seen.events
    assert paused.by == "command" and seen.download.pending is None

    gone = lifecycle.removed(attrs.evolve(noted, pending=PENDING_REMOVE_FILES))
    assert (gone.reason, gone.files_deleted) == ("command", True)
    assert (lifecycle.removed(held).reason, lifecycle.removed(held).files_deleted) == (
        "external",
        None,
    )
