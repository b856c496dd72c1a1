"""Logging set-up: one JSON object (or one text line) per event, with hash/request_id as fields.

Two things every line is protected from, whoever logged it (our code, pika, urllib3,
qbittorrent-api):

* secrets: URLs are logged through ``redact.redact_url``, and the qBittorrent password is only
  ever passed to qbittorrent-api; as a second line of defence, the formatted line loses every
  configured secret (``setup_logging``'s ``secrets``), so a library that logs a URL with its
  userinfo, or an error message quoting one, still prints ``***``;
* forged lines: a torrent name or a request id is anyone's text. A raw newline in it would
  start what looks like a second record, and an ESC sequence would drive the terminal of
  whoever reads the log. JSON escapes them by itself; the text format escapes control
  characters (``\\n``, ``\\x1b``), except the line breaks of a traceback, which it indents.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterable
from types import TracebackType
from typing import Final

from pythonjsonlogger.json import JsonFormatter

from qbit_consumer.config import LoggingConfig
from qbit_consumer.redact import Scrubber

#: Fields our code attaches with ``extra=``; the text format appends them as key=value.
CONTEXT_FIELDS: Final = (
    "hash",
    "request_id",
    "attempt",
    "reason",
    "duplicate",
    "category",
    "routing_key",
)

#: C0 controls, DEL and C1 controls (some terminals act on C1 too: 0x9b starts a sequence like
#: ESC [), and the two Unicode separators that text tools split lines on.
_CONTROLS: Final = (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
_NAMED: Final = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_ESCAPES: Final = {
    code: _NAMED.get(code, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _CONTROLS
}
_ESCAPES_BUT_NEWLINE: Final = {code: text for code, text in _ESCAPES.items() if code != 0x0A}


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x00``)."""
    return text.translate(_ESCAPES_BUT_NEWLINE if keep_newlines else _ESCAPES)


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class _TextFormatter(logging.Formatter):
    """``time level thread logger: message [key=value ...]``, on one line; a traceback follows
    on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = escape_controls(super().formatMessage(record))
        context = " ".join(
            f"{name}={escape_controls(str(getattr(record, name)))}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        return f"{line} [{context}]" if context else line

    def formatException(self, ei: _ExcInfo) -> str:
        return _continuation(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _continuation(super().formatStack(stack_info))


def _continuation(text: str) -> str:
    """A traceback's lines, indented: its line breaks are kept, but an exception message's own
    newline (which the traceback cannot be told from) never starts a line that looks like a
    record, since every record starts at the beginning of a line."""
    return textwrap.indent(escape_controls(text, keep_newlines=True), "  ", lambda _line: True)


class _Scrubbing(logging.Formatter):
    """Formats with ``inner``, then removes known secrets from the result.

    It works on the finished line, not on the record (as a ``logging.Filter`` would): only
    then are a library's ``%`` arguments, a traceback and the extra fields all rendered."""

    def __init__(self, inner: logging.Formatter, scrub: Scrubber) -> None:
        super().__init__()
        self._inner = inner
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(self._inner.format(record))


def setup_logging(cfg: LoggingConfig, secrets: Iterable[str] = ()) -> None:
    """Log to stderr in ``cfg.format``; ``secrets`` (``redact.config_secrets``) never appear
    in a line, in any form the line's format may have given them."""
    formatter: logging.Formatter
    if cfg.format == "json":
        formatter = JsonFormatter(
            "%(levelname)s %(name)s %(threadName)s %(message)s",
            rename_fields={"levelname": "level", "threadName": "thread"},
            timestamp="time",  # ISO 8601, UTC
        )
    else:
        formatter = _TextFormatter(
            "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
        )
    encodings = (
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
        lambda s: repr(s)[1:-1],
        escape_controls,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Scrubbing(formatter, Scrubber(secrets, encodings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    # pika and urllib3 log every reconnect attempt and socket error at length; our own
    # messages say the same once per outage.
    for noisy in ("pika", "urllib3", "qbittorrentapi"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy == "pika" else logging.WARNING)
