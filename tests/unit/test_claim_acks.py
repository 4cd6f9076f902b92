"""How a worker's consumer sends the acks and nacks that commits released
(app.recording.claims): many acks in one frame, never over an open delivery or a nack."""

from __future__ import annotations

import threading

from app.recording.claims import ClaimingConsumer


class _Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.sent.append(("ack", delivery_tag, multiple))

    def basic_nack(self, delivery_tag: int, requeue: bool = True) -> None:
        self.sent.append(("nack", delivery_tag, requeue))


def _consumer(open_tags: set[int], settled: list[tuple[int, bool]]) -> ClaimingConsumer:
    """The consumer's settling state only, without a connection."""
    consumer = ClaimingConsumer.__new__(ClaimingConsumer)
    consumer.channel = _Channel()
    consumer.known_tags = open_tags
    consumer._lock = threading.Lock()
    consumer._settled = settled
    consumer._held_acks = []
    consumer._threads = 1
    return consumer


def _sent(consumer: ClaimingConsumer) -> list[tuple[str, int, bool]]:
    channel = consumer.channel
    assert isinstance(channel, _Channel)
    return channel.sent


def test_acks_below_every_open_delivery_go_as_one_multiple_ack_after_the_nacks() -> None:
    consumer = _consumer({6}, [(1, True), (2, True), (4, False), (3, True), (5, True)])
    consumer._send_settled()
    # The nack leaves first: the multiple ack up to 5 must not take message 4 with it.
    assert _sent(consumer) == [("nack", 4, False), ("ack", 5, True)]


def test_acks_above_an_open_delivery_wait_for_it_then_go_with_it() -> None:
    consumer = _consumer({3}, [(4, True), (1, True), (2, True)])
    consumer._send_settled()
    # Message 3 still runs: a multiple ack up to 4 would ack it unrun.
    assert _sent(consumer) == [("ack", 2, True)]

    consumer.known_tags.discard(3)
    consumer._settled.append((3, True))
    consumer._send_settled()
    assert _sent(consumer)[1:] == [("ack", 4, True)]


def test_acks_above_an_open_delivery_go_one_by_one_beyond_one_per_thread() -> None:
    consumer = _consumer({3}, [(5, True), (1, True), (4, True), (2, True)])
    consumer._send_settled()
    # Two held for one thread: the window is not left to fill up behind a long job.
    assert _sent(consumer) == [("ack", 2, True), ("ack", 4, False), ("ack", 5, False)]


def test_an_idle_consumer_sends_every_held_ack() -> None:
    consumer = _consumer({3}, [(4, True)])
    consumer._send_settled()
    assert _sent(consumer) == []
    consumer._send_settled(everything=True)
    assert _sent(consumer) == [("ack", 4, False)]


def test_with_nothing_open_every_ack_is_covered_and_nothing_is_sent_twice() -> None:
    consumer = _consumer(set(), [(7, True), (8, True)])
    consumer._send_settled()
    consumer._send_settled()
    assert _sent(consumer) == [("ack", 8, True)]
