"""How `qbit-consumer watch` prints an event: one readable line (the live run is in
tests/test_operator_cli.py)."""

from __future__ import annotations

import json

from qbit_consumer.cli.ops import format_event


def test_format_event_lines():
    base = {
        "occurred_at": "2026-11-24T10:00:00.000Z",
        "name": "Sintel",
        "hash": "ab" * 20,
        "category": "movies",
        "request_id": "r1",
    }
    line = format_event(
        json.dumps(
            {
                **base,
                "event": "downloads.progress",
                "progress": 0.5,
                "dlspeed": 2 * 2**20,
                "eta": 30,
                "state": "downloading",
            }
        ).encode()
    )
    assert "progress" in line and "[##########----------]  50.0%" in line and "2.0 MiB/s" in line
    assert "eta 30s" in line and "[movies]" in line and "id=r1" in line
    line = format_event(
        json.dumps(
            {
                **base,
                "event": "downloads.completed",
                "size": 20 * 2**20,
                "content_path": "/d/Sintel",
            }
        ).encode()
    )
    assert "completed" in line and "20.0 MiB in /d/Sintel" in line
    line = format_event(
        json.dumps(
            {
                **base,
                "name": None,
                "hash": None,
                "category": None,
                "request_id": None,
                "event": "downloads.polling_failed",
                "consecutive_failures": 3,
                "error": "down",
            }
        ).encode()
    )
    assert "qBittorrent" in line and "3 polls failed: down" in line
    assert "not JSON" in format_event(b"\xff")
