"""Lifecycle events stored but not confirmed before a crash go out after the restart, with the
same event_id; an event nobody listens for is a warning, not an endless retry."""

from __future__ import annotations

import logging
import time

import pytest

from qbit_consumer.contract.events import Completed
from qbit_consumer.tracking.outbox import PublishQueue
from qbit_consumer.tracking.registry import Registry
from qbit_consumer.tracking.state import State
from tests.fixtures.rabbitmq import wait_until
from tests.fixtures.service import random_hash

pytestmark = pytest.mark.live


def store_unconfirmed(path, infohash: str) -> Completed:
    """What a crash right after recording a completion leaves behind."""
    event = Completed(
        request_id="before-crash",
        hash=infohash,
        infohash_v2=None,
        name="x",
        category="tv",
        size=5,
        save_path="/d",
        content_path="/d/x",
        completed_at="2026-01-01T00:00:00Z",
    )
    state = State(path)
    Registry(state, PublishQueue()).record(events=[event])
    state.close()
    return event


def test_an_event_stored_before_a_crash_is_published_after_restart_with_its_event_id(
    qbittorrent, make_config, start_service, events
):
    cfg = make_config(qbittorrent)
    event = store_unconfirmed(cfg.state.path, random_hash())

    start_service(cfg)

    published = events.wait_for("downloads.completed", hash=event.hash)[0]
    assert published["event_id"] == event.event_id
    assert published["request_id"] == "before-crash"
    assert events.properties_of(event.event_id).message_id == event.event_id
    wait_until(lambda: State(cfg.state.path).load_outbox() == [], 10, "the outbox to empty")


def test_a_lifecycle_event_nobody_listens_for_is_logged_once_and_not_retried(
    qbittorrent, make_config, start_service, caplog
):
    # No `events` fixture and no history stream: nothing is bound to the exchange.
    cfg = make_config(qbittorrent, history={"enabled": "false"})
    store_unconfirmed(cfg.state.path, random_hash())
    caplog.set_level(logging.WARNING, logger="qbit_consumer")

    start_service(cfg)

    # Confirmed (unroutable) by the broker, so dropped from the outbox, and said once.
    wait_until(lambda: State(cfg.state.path).load_outbox() == [], 10, "the outbox to empty")
    time.sleep(1.5)  # poll cycles and publisher rounds: a retried event would warn again
    warnings = [r for r in caplog.records if "nobody is listening" in r.getMessage()]
    assert len(warnings) == 1
    assert "downloads.completed" in warnings[0].getMessage()
    assert State(cfg.state.path).load_outbox() == []
