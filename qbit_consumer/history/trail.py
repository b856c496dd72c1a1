"""The audit trail as data: events read back from the history stream, chosen by download and
time, and summed up. Pure: ``broker.stream`` reads, ``cli.history`` prints."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from qbit_consumer.contract.events import read_rfc3339

_RELATIVE: Final = re.compile(r"^(\d+)([smhdw])$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@attrs.frozen
class Entry:
    """One event of the trail: its place in the stream, its body as published, and the
    fields that choosing and summing need."""

    offset: int
    body: bytes
    event: dict[str, Any]
    at: datetime  # occurred_at, aware

    @property
    def kind(self) -> str:
        return str(self.event.get("event", "?"))


def entries(messages: Iterable[tuple[int, bytes]]) -> Iterator[Entry]:
    """The events among ``messages``; anything else in the stream (a message some other
    publisher sent to the event exchange) is left out."""
    for offset, body in messages:
        try:
            event = json.loads(body)
            at = read_rfc3339(str(event["occurred_at"]))
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(event, dict) and "event" in event and at.tzinfo is not None:
            yield Entry(offset=offset, body=body, event=event, at=at)


def parse_when(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` before ``now``; or a date or date and time
    (``2026-11-01``, ``2026-11-01T08:00``), local time unless it says otherwise.

    :raises ValueError: with a sentence for the user.
    """
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (7d, 12h, 30m) nor a date (2026-11-01, "
            "2026-11-01T08:00)"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


def of_download(entry: Entry, hashes: frozenset[str] | None, request_id: str | None) -> bool:
    """Whether ``entry`` is about the download asked for (either filter, or none)."""
    event = entry.event
    if request_id is not None and event.get("request_id") != request_id:
        return False
    if hashes is not None:
        v2 = event.get("infohash_v2") or ""
        known = {event.get("hash"), v2, v2[:40]}
        if not hashes & known:
            return False
    return True


@attrs.frozen
class Summary:
    kinds: Counter[str]
    categories: dict[str, Counter[str]]
    failures: Counter[str]
    #: Seconds from `received` to `completed`, per download that has both.
    completion_seconds: list[float]
    #: Downloads added and never completed nor removed: (hash, name, last event, its time).
    unfinished: list[tuple[str, str, str, datetime]]


def summarize(trail: Iterable[Entry]) -> Summary:
    kinds: Counter[str] = Counter()
    categories: dict[str, Counter[str]] = {}
    failures: Counter[str] = Counter()
    received: dict[str, datetime] = {}
    completed: dict[str, datetime] = {}
    added: dict[str, Entry] = {}
    last: dict[str, Entry] = {}
    ended: set[str] = set()
    for entry in trail:
        kind = entry.kind.removeprefix("downloads.")
        kinds[kind] += 1
        event = entry.event
        if event.get("category"):
            categories.setdefault(str(event["category"]), Counter())[kind] += 1
        if kind == "failed":
            failures[str(event.get("reason"))] += 1
        key = event.get("hash")
        if not key:
            continue
        last[key] = entry
        if kind == "received":
            received.setdefault(key, entry.at)
        elif kind == "added":
            added.setdefault(key, entry)
        elif kind == "completed":
            completed.setdefault(key, entry.at)
            ended.add(key)
        elif kind == "removed":
            ended.add(key)
    durations = [
        (completed[key] - received[key]).total_seconds() for key in completed if key in received
    ]
    unfinished = [
        (key, str(entry.event.get("name") or ""), last[key].kind, last[key].at)
        for key, entry in added.items()
        if key not in ended
    ]
    return Summary(kinds, categories, failures, durations, unfinished)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]
