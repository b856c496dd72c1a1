from __future__ import annotations

from qbit_consumer.contract.events import Envelope
from qbit_consumer.tracking.outbox import PublishQueue


def progress(h: str, n: int) -> Envelope:
    return Envelope(
        routing_key="downloads.progress",
        body=str(n).encode(),
        event_id=f"p-{h}-{n}",
        hash=h,
        request_id=None,
        persistent=False,
    )


def lifecycle(h: str, name: str, seq: int) -> Envelope:
    return Envelope(
        routing_key=name,
        body=b"{}",
        event_id=f"e-{seq}",
        hash=h,
        request_id=None,
        persistent=True,
        seq=seq,
    )


def drain(queue: PublishQueue) -> list[str]:
    taken = []
    while batch := queue.take():
        taken.extend(item.event_id for item in batch)
    return taken


def test_progress_is_coalesced_to_the_latest_per_download_while_waiting():
    queue = PublishQueue()
    for cycle in range(1000):
        queue.put_progress([progress(h, cycle) for h in ("a", "b")])
    assert len(queue) == 2
    assert drain(queue) == ["p-a-999", "p-b-999"]


def test_order_per_download_is_kept_across_lifecycle_and_progress():
    queue = PublishQueue()
    queue.put_progress([progress("a", 1)])
    queue.put_lifecycle([lifecycle("a", "downloads.paused", 1)])
    queue.put_progress([progress("a", 2)])
    queue.put_progress([progress("a", 3)])  # replaces 2, which is behind the lifecycle event
    queue.put_lifecycle([lifecycle("a", "downloads.completed", 2)])
    assert drain(queue) == ["p-a-1", "e-1", "p-a-3", "e-2"]


def test_lifecycle_events_are_never_dropped_or_merged():
    queue = PublishQueue()
    queue.put_lifecycle([lifecycle("a", "downloads.stalled", i) for i in range(50)])
    assert drain(queue) == [f"e-{i}" for i in range(50)]


def test_items_put_back_after_a_failed_publish_go_out_first_in_their_order():
    queue = PublishQueue()
    queue.put_lifecycle([lifecycle(h, "downloads.removed", i) for i, h in enumerate("abcd")])
    first_two = queue.take(2)
    assert [item.event_id for item in first_two] == ["e-0", "e-1"]
    queue.put_back(first_two)
    assert drain(queue) == ["e-0", "e-1", "e-2", "e-3"]


def test_take_returns_at_most_the_limit_oldest_first():
    queue = PublishQueue()
    queue.put_lifecycle([lifecycle("a", "downloads.stalled", i) for i in range(7)])
    assert [item.event_id for item in queue.take(5)] == [f"e-{i}" for i in range(5)]
    assert [item.event_id for item in queue.take(5)] == ["e-5", "e-6"]
    assert queue.take(5) == []


def test_producers_wake_the_publisher():
    queue = PublishQueue()
    woken = []
    queue.set_waker(lambda: woken.append(1))
    queue.put_progress([progress("a", 1)])
    queue.put_lifecycle([lifecycle("a", "downloads.completed", 1)])
    assert len(woken) == 2


def status(n: int) -> Envelope:
    return Envelope(
        routing_key="downloads.status",
        body=str(n).encode(),
        event_id=f"s-{n}",
        hash=None,
        request_id=None,
        persistent=True,
    )


def test_a_newer_status_replaces_the_one_waiting_in_its_place_and_queues_again_once_taken():
    queue = PublishQueue()
    queue.put_status(status(1))
    queue.put_lifecycle([lifecycle("a", "downloads.completed", 1)])
    for n in range(2, 61):  # an hour of statuses while the broker is away
        queue.put_status(status(n))

    assert drain(queue) == ["s-60", "e-1"]
    queue.put_status(status(61))
    assert drain(queue) == ["s-61"]
