from __future__ import annotations

from qbit_consumer.broker.confirms import InFlight


def test_tags_are_numbered_from_one_in_publish_order():
    inflight = InFlight()
    assert [inflight.sent("x", "k", str(i)).tag for i in range(3)] == [1, 2, 3]
    assert len(inflight) == 3


def test_a_multiple_ack_confirms_every_tag_up_to_its_own():
    inflight = InFlight()
    sent = [inflight.sent("x", "k", str(i)) for i in range(5)]
    inflight.confirm(3, multiple=True, ok=True)
    assert [s.confirmed for s in sent] == [True, True, True, False, False]
    assert len(inflight) == 2


def test_single_acks_may_come_out_of_order():
    inflight = InFlight()
    sent = [inflight.sent("x", "k", str(i)) for i in range(3)]
    inflight.confirm(3, multiple=False, ok=True)
    inflight.confirm(1, multiple=False, ok=True)
    assert [s.confirmed for s in sent] == [True, False, True]
    inflight.confirm(2, multiple=True, ok=True)
    assert not inflight and all(s.confirmed for s in sent)


def test_a_nack_is_recorded_on_the_message():
    inflight = InFlight()
    first, second = inflight.sent("x", "k", "a"), inflight.sent("x", "k", "b")
    inflight.confirm(2, multiple=True, ok=False)
    assert first.nacked and second.nacked and first.confirmed


def test_a_return_marks_the_oldest_waiting_message_with_that_key_and_id_unrouted():
    inflight = InFlight()
    a = inflight.sent("x", "downloads.added", "id-1")
    b = inflight.sent("x", "downloads.removed", "id-2")
    c = inflight.sent("", "downloads.add.dlq", None)
    d = inflight.sent("", "downloads.add.dlq", None)
    inflight.returned("x", "downloads.removed", "id-2")
    inflight.returned("", "downloads.add.dlq", None)
    assert (a.routed, b.routed, c.routed, d.routed) == (True, False, False, True)


def test_confirms_for_unknown_tags_are_ignored():
    inflight = InFlight()
    sent = inflight.sent("x", "k", "a")
    inflight.confirm(7, multiple=False, ok=True)
    assert not sent.confirmed and len(inflight) == 1
