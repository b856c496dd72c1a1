from __future__ import annotations

from qbit_consumer.publisher import Item, PublishQueue


def progress(h: str, n: int) -> Item:
    return Item("downloads.progress", str(n).encode(), f"p-{h}-{n}", h, None, False)


def lifecycle(h: str, name: str, seq: int) -> Item:
    return Item(name, b"{}", f"e-{seq}", h, None, True, seq)


def drain(queue: PublishQueue) -> list[str]:
    taken = []
    while (item := queue.take()) is not None:
        taken.append(item.event_id)
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


def test_an_item_put_back_after_a_failed_publish_goes_out_first():
    queue = PublishQueue()
    queue.put_lifecycle(
        [lifecycle("a", "downloads.completed", 1), lifecycle("b", "downloads.removed", 2)]
    )
    first = queue.take()
    queue.put_back(first)
    assert drain(queue) == ["e-1", "e-2"]


def test_producers_wake_the_publisher():
    queue = PublishQueue()
    woken = []
    queue.set_waker(lambda: woken.append(1))
    queue.put_progress([progress("a", 1)])
    queue.put_lifecycle([lifecycle("a", "downloads.completed", 1)])
    assert len(woken) == 2
