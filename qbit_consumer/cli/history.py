"""``qbit-consumer history``: the audit trail in a terminal, or as JSON lines for jq.

It reads the history stream from ``--since`` (a timestamp offset: nothing older is read) to the
end the stream had when it began, consumes and changes nothing, and ends by itself.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import TextIO

from qbit_consumer.broker.stream import StreamReader
from qbit_consumer.cli.ops import duration, event_parts
from qbit_consumer.config import Config
from qbit_consumer.history import trail
from qbit_consumer.history.trail import Entry


def history(
    cfg: Config,
    *,
    since: datetime | None,
    until: datetime | None,
    hashes: frozenset[str] | None,
    request_id: str | None,
    as_json: bool,
    summary: bool,
    out: TextIO | None = None,
) -> int:
    """Print the events asked for; returns how many there were.

    :raises HistoryUnavailable: the stream is not there.
    """
    out = out or sys.stdout  # the stream of the moment (tests replace it)
    stream = cfg.history.stream
    reader = StreamReader(cfg.rabbitmq.url, role="history")
    reader.connect()
    try:
        end = reader.stream_end(stream)
        if end is None:
            print(f"the history stream '{stream}' is empty", file=out)
            return 0
        chosen = [
            entry
            for entry in trail.entries(reader.read(stream, since or "first", end))
            if (since is None or entry.at >= since)
            and (until is None or entry.at <= until)
            and trail.of_download(entry, hashes, request_id)
        ]
    finally:
        reader.close()
    if not chosen:
        print(
            f"no events in '{stream}'{_range(since, until)}{_which(hashes, request_id)}", file=out
        )
    elif as_json:
        for entry in chosen:
            out.write(entry.body.decode("utf-8", "replace") + "\n")
    elif summary:
        _print_summary(trail.summarize(chosen), out)
    else:
        _print_lines(chosen, timeline=hashes is not None or request_id is not None, out=out)
    return len(chosen)


def _print_lines(chosen: Iterable[Entry], *, timeline: bool, out: TextIO) -> None:
    """One aligned line per event, local times; a timeline adds the time since the step
    before."""
    previous: datetime | None = None
    for entry in chosen:
        kind, who, what = event_parts(entry.event)
        when = entry.at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        step = ""
        if timeline:
            gap = "" if previous is None else "+" + duration((entry.at - previous).total_seconds())
            step = f"{gap:>9}  "
            previous = entry.at
        print(f"{when}  {step}{kind:<19} {who}  {what}".rstrip(), file=out)


def _print_summary(summary: trail.Summary, out: TextIO) -> None:
    print("events by kind", file=out)
    for kind, count in summary.kinds.most_common():
        print(f"  {kind:<19} {count:>7}", file=out)
    if summary.categories:
        print("by category", file=out)
        for category, kinds in sorted(summary.categories.items()):
            counts = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
            print(f"  {category:<19} {counts}", file=out)
    if summary.failures:
        print("failures by reason", file=out)
        for reason, count in summary.failures.most_common():
            print(f"  {reason:<19} {count:>7}", file=out)
    times = summary.completion_seconds
    if times:
        median, p95 = statistics.median(times), trail.percentile(times, 0.95)
        print(
            f"received -> completed ({len(times)} downloads): median {duration(median)}, "
            f"p95 {duration(p95)}, max {duration(max(times))}",
            file=out,
        )
    if summary.unfinished:
        print(f"never completed ({len(summary.unfinished)})", file=out)
        for key, name, last, at in summary.unfinished:
            when = at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            last_kind = last.removeprefix("downloads.")
            print(f"  {key[:12]}  {name[:40]:<40}  last: {last_kind} at {when}", file=out)


def _range(since: datetime | None, until: datetime | None) -> str:
    parts = []
    if since is not None:
        parts.append(f" since {since.astimezone():%Y-%m-%d %H:%M}")
    if until is not None:
        parts.append(f" until {until.astimezone():%Y-%m-%d %H:%M}")
    return "".join(parts)


def _which(hashes: frozenset[str] | None, request_id: str | None) -> str:
    if request_id is not None:
        return f" for request id {request_id!r}"
    if hashes is not None:
        return f" for {min(hashes, key=len)}"
    return ""
