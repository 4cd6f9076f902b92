"""Starts claimed in batches as RabbitMQ delivers messages, before any worker thread waits.

Without this, every worker thread asks the group committer to start its job and waits for
the commit before running the actor: eight threads, eight waits, batches of about three.
Here the consumer hands each delivered message's start to the group committer as soon as
it arrives, so the starts of everything delivered meanwhile share one commit, and a
message reaches the work queue only once its start is durable. Its worker thread then
finds the decision already made (:func:`take_claim`): run attempt N, skip it, or retry
later because the database was unreachable.

What a claim promises is what the start promised before: the job is ``running`` in the
database before its actor runs; a cancelled, finished or duplicate job is never started;
if the process dies before the shared commit, nothing was handed to a worker thread and
nothing is acked, so RabbitMQ delivers every message again.

How far ahead it claims: a claimed job shows ``running`` while it waits for a free worker
thread, so the consumer claims at most one job per worker thread, plus as many more as
would start within :data:`CLAIM_AHEAD_SECONDS` at the rate jobs have been finishing here
(at 2,000 jobs/s, ten; for jobs of 10 ms on eight threads, four; for jobs of a second,
none). Messages RabbitMQ has delivered beyond that wait unclaimed, still ``queued``, in
this consumer.
"""

from __future__ import annotations

import bisect
import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import dramatiq.worker
import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqMessage
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message, get_encoder

from app.recording.acks import AckAfterCommitConsumer
from app.recording.changes import ChangeResult

logger = logging.getLogger(__name__)

#: How long a claimed job may wait for a worker thread, judged by the recent finishing
#: rate: a job shown ``running`` is running, or starts within about this long.
CLAIM_AHEAD_SECONDS = 0.005
#: Weight of the newest interval between two jobs finishing in the moving average that
#: gives the finishing rate.
INTERVAL_WEIGHT = 0.05
#: Claimed ahead of the threads at most, per thread, however fast jobs finish.
MOST_AHEAD_PER_THREAD = 2
#: RabbitMQ prefetch per worker thread: the claimed, the running, those whose ack waits
#: for their outcome's commit, and the delivered ones waiting to be claimed.
PREFETCH_PER_THREAD = 5

_CLAIM_ATTRIBUTE = "_jobstack_claim"
_OWNER_ATTRIBUTE = "_jobstack_claimed_by"

#: What the group committer decided for a message's start: the attempt number to run,
#: None when it must not run, Deferred when it is to be sent again later, or the error
#: that kept the start from being recorded.
Decision = ChangeResult | Exception


class ClaimStarts(Protocol):
    """Hands a message's start to the group committer; ``on_done`` gets the decision on
    the committer's thread, after the commit."""

    def __call__(self, message: MessageProxy, on_done: Callable[[Decision], None]) -> None: ...


class Claim:
    """A message's committed start, waiting for its worker thread."""

    __slots__ = ("consumer", "decision")

    def __init__(self, consumer: ClaimingConsumer, decision: Decision) -> None:
        self.consumer = consumer
        self.decision = decision


#: What :func:`take_claim` returns for a message nobody claimed.
NOT_CLAIMED = object()


def take_claim(message: MessageProxy) -> Decision | object:
    """The start decided for ``message`` at delivery, or :data:`NOT_CLAIMED` when it
    came another way (another broker, a delayed message); once per message."""
    claim: Claim | None = message.__dict__.pop(_CLAIM_ATTRIBUTE, None)
    if claim is None:
        return NOT_CLAIMED
    claim.consumer.started(message)
    return claim.decision


class ClaimingConsumer(AckAfterCommitConsumer):
    """A RabbitMQ consumer that starts jobs in batches as their messages arrive."""

    def __init__(
        self,
        broker: Any,
        queue_name: str,
        prefetch: int,
        timeout: int,
        *,
        claim_starts: ClaimStarts,
        threads: int,
        on_claimed: Callable[[str], None],
    ) -> None:
        # The parent opens the connection and channel; its consume() generator is never
        # started (basic_consume below takes its place), so it registers no consumer.
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._claim_starts = claim_starts
        self._on_claimed = on_claimed
        self._threads = max(1, threads)
        self._timeout = timeout / 1000
        self._delivered: collections.deque[MessageProxy] = collections.deque()
        self._ready: collections.deque[MessageProxy] = collections.deque()
        self._lock = threading.Lock()
        self._in_flight = 0  # claimed (or being claimed) and not yet acked or nacked
        self._unstarted: set[int] = set()  # claimed, not yet taken by a worker thread
        # Moving average of the seconds between two jobs finishing here, and the last.
        self._interval = float("inf")
        self._last_finished: float | None = None
        self._claiming = True
        self._wake_scheduled = False
        # Acks and nacks released by the commits, sent together by the consumer thread.
        self._settled: list[tuple[int, bool]] = []
        self._held_acks: list[int] = []  # consumer thread only
        try:
            # An operator's dramatiq_queue_prefetch (stricter priority order) still wins.
            prefetch_count = dramatiq.worker.QUEUE_PREFETCH or PREFETCH_PER_THREAD * self._threads
            self.channel.basic_qos(prefetch_count=prefetch_count)
            self.channel.basic_consume(queue_name, self._on_delivery)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    # The consumer thread ---------------------------------------------------------------

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self._timeout
        while True:
            if self._ready:
                return self._ready.popleft()
            self._claim_what_fits()
            wait = deadline - time.monotonic()
            if wait <= 0:
                self._send_settled(everything=True)  # Idle: nothing to wait for.
                return None
            try:
                self._send_settled()
                self.connection.process_data_events(time_limit=wait)
            except (
                AssertionError,
                pika.exceptions.AMQPConnectionError,
                pika.exceptions.AMQPChannelError,
            ) as e:
                if getattr(e, "reply_code", None) == 404:
                    self.broker.queues_pending.add(q_name(self.queue_name))
                raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _on_delivery(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        try:
            message = Message.decode(body)
        except DecodeError:
            logger.exception("Failed to decode message using encoder %r.", get_encoder())
            with self._lock:  # In turn with the acks: a multiple ack must not cover it.
                self._settled.append((method.delivery_tag, False))
            return
        self.known_tags.add(method.delivery_tag)
        proxy = _RabbitmqMessage(method.redelivered, method.delivery_tag, message)  # type: ignore[no-untyped-call]
        if "eta" in message.options or not self._claiming:
            # A delayed message goes to Dramatiq's delay queue, and its worker thread
            # starts it the old way when it is due.
            self._ready.append(proxy)
        else:
            self._delivered.append(proxy)

    def _claim_what_fits(self) -> None:
        if not self._delivered or not self._claiming:
            return
        with self._lock:
            room = self._claim_limit() - self._in_flight
            taken = min(room, len(self._delivered))
            if taken <= 0:
                return
            self._in_flight += taken
        for _ in range(taken):
            message = self._delivered.popleft()
            setattr(message, _OWNER_ATTRIBUTE, self)
            with self._lock:
                self._unstarted.add(message._tag)
            self._claim_starts(message, functools.partial(self._claimed, message))

    def _claim_limit(self) -> int:
        """One claimed job per worker thread, plus those that would start within
        CLAIM_AHEAD_SECONDS at the recent finishing rate (a thread frees up every
        ``_interval`` seconds)."""
        ahead = int(CLAIM_AHEAD_SECONDS / self._interval)
        return self._threads + min(MOST_AHEAD_PER_THREAD * self._threads, ahead)

    # The committer's thread ------------------------------------------------------------

    def _claimed(self, message: MessageProxy, decision: Decision) -> None:
        setattr(message, _CLAIM_ATTRIBUTE, Claim(self, decision))
        if isinstance(decision, int):
            self._on_claimed(message.message_id)
        self._ready.append(message)
        self._wake()

    # Worker threads --------------------------------------------------------------------

    def started(self, message: MessageProxy) -> None:
        with self._lock:
            self._unstarted.discard(message._tag)

    def ack(self, message: MessageProxy) -> None:
        self._finished(message)
        self._after_gate(message, self._settle_ack)

    def nack(self, message: MessageProxy) -> None:
        self._finished(message)
        self._after_gate(message, self._settle_nack)

    def _settle_ack(self, message: MessageProxy) -> None:
        self._settle(message, ack=True)

    def _settle_nack(self, message: MessageProxy) -> None:
        self._settle(message, ack=False)

    def _settle(self, message: MessageProxy, *, ack: bool) -> None:
        """Queue the ack or nack for the consumer thread (on a worker thread, or on the
        committer's once the outcome is durable)."""
        with self._lock:
            if message._tag not in self.known_tags:
                logger.warning("Not settling message %s: not in known tags.", message.message_id)
                return
            self.known_tags.discard(message._tag)
            self._settled.append((message._tag, ack))
        self._wake()

    def _finished(self, message: MessageProxy) -> None:
        # Only messages this consumer claimed count: after a reconnect, the messages the
        # old consumer claimed are acked through the new one.
        if message.__dict__.pop(_OWNER_ATTRIBUTE, None) is not self:
            return
        now = time.monotonic()
        with self._lock:
            self._unstarted.discard(message._tag)  # Nacked before a thread took it.
            self._in_flight = max(0, self._in_flight - 1)
            if self._last_finished is not None:
                interval = now - self._last_finished
                if self._interval == float("inf"):
                    self._interval = interval
                else:
                    self._interval += INTERVAL_WEIGHT * (interval - self._interval)
            self._last_finished = now
        if self._delivered:
            self._wake()  # Room for another claim.

    def _wake(self) -> None:
        """Make the consumer thread's wait for RabbitMQ return (at most one pending)."""
        if self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            self.connection.add_callback_threadsafe(self._woken)
        except Exception:
            # The connection is closing: the consumer thread stops waiting on it anyway.
            self._wake_scheduled = False

    def _woken(self) -> None:
        self._wake_scheduled = False
        self._send_settled()

    def _send_settled(self, *, everything: bool = False) -> None:
        """Send the queued acks and nacks (on the consumer thread, which owns the channel).

        Acks of every delivery up to a tag go as one ``multiple`` ack, as long as no
        delivery below that tag is still open; nacks go first, one by one, so a multiple
        ack never covers a message meant for the dead-letter queue. Acks above an open
        delivery wait for it (a later multiple ack takes them), up to one per worker
        thread, or until ``everything`` is sent (the consumer idles or closes): they only
        hold RabbitMQ's prefetch window, which has room for them.
        """
        with self._lock:
            if not self._settled and not (everything and self._held_acks):
                return
            settled, self._settled = self._settled, []
            lowest_open = min(self.known_tags, default=None)
        for tag, ack in settled:
            if not ack:
                self.channel.basic_nack(tag, requeue=False)
        acks = sorted([*self._held_acks, *(tag for tag, ack in settled if ack)])
        covered = len(acks) if lowest_open is None else bisect.bisect_left(acks, lowest_open)
        if covered:
            self.channel.basic_ack(acks[covered - 1], multiple=True)
        self._held_acks = acks[covered:]
        if everything or len(self._held_acks) > self._threads:
            for tag in self._held_acks:
                self.channel.basic_ack(tag)
            self._held_acks = []

    # Shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        # The consumer thread has stopped: what the last commits released goes now.
        try:
            self._send_settled(everything=True)
        except Exception:
            logger.warning("Could not send the last acks; those messages return.", exc_info=True)
        super().close()  # type: ignore[no-untyped-call]

    def stop_claiming(self) -> None:
        """Claim nothing more; what is delivered unclaimed returns to RabbitMQ."""
        self._claiming = False

    def unstarted(self) -> int:
        """Claimed jobs no worker thread has taken yet."""
        with self._lock:
            return len(self._unstarted)


def wait_for_claimed(consumers: list[ClaimingConsumer], timeout: float) -> bool:
    """Stop claiming, then wait until every claimed job was taken by a worker thread, so
    that a worker shutting down leaves no job ``running`` that nothing runs."""
    for consumer in consumers:
        consumer.stop_claiming()
    deadline = time.monotonic() + timeout
    while any(consumer.unstarted() for consumer in consumers):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
