"""Logging set-up: one JSON object (or one text line) per event, with hash/request_id as fields.

Secrets never reach a log line: URLs are logged through ``redact.redact_url``, and the
qBittorrent password is only ever passed to qbittorrent-api, whose own logging redacts cookies.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

from pythonjsonlogger.json import JsonFormatter

from qbit_consumer.config import LoggingConfig

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


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        return f"{line} [{context}]" if context else line


def setup_logging(cfg: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(threadName)s %(message)s",
                rename_fields={"levelname": "level", "threadName": "thread"},
                timestamp="time",  # ISO 8601, UTC
            )
        )
    else:
        handler.setFormatter(
            _TextFormatter("%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    # pika and urllib3 log every reconnect attempt and socket error at length; our own
    # messages say the same once per outage.
    for noisy in ("pika", "urllib3", "qbittorrentapi"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy == "pika" else logging.WARNING)
