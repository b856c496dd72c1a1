"""When qBittorrent refuses to add a magnet (``Fails.``, 409), it may hold the torrent already,
under another id (a hybrid re-keyed to its v2 id), or be still loading it: two full listings a
moment apart look for it, and a magnet found nowhere is retried, never dead-lettered as
rejected: the magnet itself was checked before qBittorrent saw it."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from qbit_consumer.commands import add, batch
from qbit_consumer.commands.batch import AddResult, add_downloads
from qbit_consumer.commands.table import parse_command
from qbit_consumer.config import Config
from qbit_consumer.contract.messages import CommandContext
from qbit_consumer.errors import TransientError
from qbit_consumer.model import Torrent
from tests.stubs import FakeQbit, torrent

V1 = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
V2 = "32bcc50c8f5385308227700e85b55929100c875f76ea37a65c595ad930391ac4"


def command(h: str = V1) -> add.AddCommand:
    body = f'{{"magnet": "magnet:?xt=urn:btih:{h}", "category": "tv"}}'.encode()
    _, parsed = parse_command(
        add.ROUTING_KEY,
        body,
        correlation_id=None,
        message_id=None,
        cfg=Config(categories={"tv": ""}),
        context=CommandContext(),
    )
    return parsed


class Unlisting(FakeQbit):
    """Takes a magnet (``Ok.``) but lists nothing under its ids until ``shows`` full listings
    have gone by; refuses it (``Fails.``) when it comes again."""

    def __init__(self, shows: Torrent | None = None, after: int = 0) -> None:
        super().__init__()
        self.taken: set[str] = set()
        self.shows, self.after, self.full_listings = shows, after, 0

    def add_magnet(self, uri: str, *, category: str, tags: Iterable[str], save_path: str) -> bool:
        self._call("add_magnet")
        lines = uri.split("\n")
        new = [line for line in lines if line not in self.taken]
        self.taken.update(lines)
        return bool(new)

    def all_torrents(self) -> list[Torrent]:
        self.full_listings += 1
        if self.shows is not None and self.full_listings > self.after:
            return [self.shows]
        return []


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(batch, "LIST_TIMEOUT_SECONDS", 0.05)
    monkeypatch.setattr(batch, "BATCH_LIST_SECONDS", 0.05)
    monkeypatch.setattr(batch, "RELIST_PAUSE_SECONDS", 0.0)


def test_a_magnet_taken_but_not_listed_is_retried_not_rejected():
    qbit = Unlisting()
    [outcome] = add_downloads(qbit, [command()], lambda _category: "")
    assert isinstance(outcome, TransientError), outcome
    assert qbit.calls.count("add_magnet") == 2


def test_a_torrent_the_second_full_listing_finds_under_its_v2_id_is_a_duplicate():
    rekeyed = torrent(V2[:40], infohash_v1=V1, infohash_v2=V2)
    qbit = Unlisting(shows=rekeyed, after=1)  # the first listing comes during the re-keying
    [outcome] = add_downloads(qbit, [command()], lambda _category: "")
    assert isinstance(outcome, AddResult) and outcome.duplicate, outcome
    assert outcome.torrent.id == V2[:40]
    assert qbit.full_listings == 2


class RekeyedAtOnce(FakeQbit):
    """Takes a v1-only magnet of a hybrid torrent and lists it under its v2 id from the start
    (its metadata came before the first listing), with the managed tag it was added with."""

    def add_magnet(self, uri: str, *, category: str, tags: Iterable[str], save_path: str) -> bool:
        self._call("add_magnet")
        self.listed[V2[:40]] = torrent(V2[:40], infohash_v1=V1, infohash_v2=V2)
        self.tags[V2[:40]] = set(tags)
        return True


def test_a_hybrid_rekeyed_before_it_was_first_listed_is_found_by_its_tag_and_is_no_duplicate(
    monkeypatch,
):
    monkeypatch.setattr(batch, "LIST_TIMEOUT_SECONDS", 5.0)
    monkeypatch.setattr(batch, "TAGGED_LOOK_SECONDS", 0.01)
    qbit = RekeyedAtOnce()
    [outcome] = add_downloads(qbit, [command()], lambda _category: "")
    assert isinstance(outcome, AddResult), outcome
    assert outcome.torrent.id == V2[:40] and not outcome.duplicate
    assert qbit.calls.count("add_magnet") == 1  # found while waiting, not by adding it again
    assert "all_torrents" not in qbit.calls


def test_magnets_refused_in_a_batch_and_alone_that_nobody_lists_are_retried():
    other = "b" * 40
    qbit = Unlisting()
    qbit.taken.update(f"magnet:?xt=urn:btih:{h}" for h in (V1, other))  # refused at once
    outcomes = add_downloads(qbit, [command(V1), command(other)], lambda _category: "")
    assert [type(o) for o in outcomes] == [TransientError, TransientError]
    assert qbit.full_listings == 4  # two looks each before the verdict
    assert qbit.calls.count("add_magnet") == 3  # the batch, then each alone
