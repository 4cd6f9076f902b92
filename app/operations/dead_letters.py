"""Dead letters: listing what sits in ``<queue>.XQ`` and re-driving it.

A re-driven message's job goes back to ``queued`` as a new attempt (with a fresh retry
budget) and is published again; the dead letter is then acked away. Messages that do not
match the filter stay where they are. Nothing is decoded but Dramatiq's JSON messages.

A quorum queue counts every fetched message it gets back as a delivery; there, each dead
letter looked at and kept is filed back as a new message instead (published, confirmed,
then the fetched one acked), so listing never counts toward a delivery limit.

A quorum queue also dead-letters by itself a message delivered more often than its
delivery limit (JOBSTACK_QUORUM_DELIVERY_LIMIT), whose job jobstack still records as
queued or running: :func:`sweep` fails those jobs, and the letter can then be re-driven.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import dramatiq
import pika
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import xq_name
from dramatiq.errors import DecodeError

from app import db
from app.errors import InvalidTransition, StaleAttempt
from app.models import Job
from app.operations import control
from app.rabbitmq.queue_arguments import QUORUM
from app.states import JobState
from app.timeutil import utcnow
from app.transitions import transition
from app.webhooks import enqueue_delivery

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to act on; unset fields match everything."""

    actor: str | None = None
    queue: str | None = None
    error_type: str | None = None
    failed_after: datetime | None = None
    failed_before: datetime | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    actor: str
    queue: str
    job_state: str | None
    error_type: str | None
    error_message: str | None
    failed_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _matches(letter: DeadLetter, wanted: DeadLetterFilter) -> bool:
    checks = [
        wanted.job_id is None or letter.job_id == wanted.job_id,
        wanted.actor is None or letter.actor == wanted.actor,
        wanted.queue is None or letter.queue == wanted.queue,
        wanted.error_type is None or letter.error_type == wanted.error_type,
        wanted.failed_after is None
        or (letter.failed_at is not None and letter.failed_at >= wanted.failed_after),
        wanted.failed_before is None
        or (letter.failed_at is not None and letter.failed_at < wanted.failed_before),
    ]
    return all(checks)


def _describe(message: Message[Any], queue: str) -> DeadLetter:
    with db.session_scope() as session:
        job = session.get(Job, message.message_id)
    return DeadLetter(
        job_id=message.message_id,
        actor=message.actor_name,
        queue=queue,
        job_state=job.state if job else None,
        error_type=job.error_type if job else None,
        error_message=job.error_message if job else None,
        failed_at=job.finished_at if job else None,
    )


@dataclass(frozen=True)
class Fetched:
    """A dead letter fetched and not acked yet."""

    tag: int
    properties: pika.BasicProperties
    message: Message[Any] | None  # None: not a Dramatiq message
    body: bytes

    @property
    def killed_by_rabbitmq(self) -> bool:
        """Whether RabbitMQ dead-lettered it by itself, past the queue's delivery limit."""
        headers = self.properties.headers or {}
        return bool(headers.get("x-first-death-reason") == "delivery_limit")


def _walk(channel: Any, queue: str) -> Iterator[Fetched]:
    """Each message now in ``queue``'s dead-letter queue, fetched without acking."""
    pending = channel.queue_declare(xq_name(queue), passive=True).method.message_count
    for _ in range(pending):
        method, properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
        if method is None:
            return
        try:
            message: Message[Any] | None = Message.decode(body)
        except DecodeError:
            message = None
        yield Fetched(method.delivery_tag, properties, message, body)


class _Letters:
    """A channel on the dead-letter queues that puts back what it fetched and kept."""

    def __init__(self, broker: RabbitmqBroker) -> None:
        self.quorum = getattr(broker, "queue_type", None) == QUORUM
        self.connection = pika.BlockingConnection(broker.parameters)
        self.channel = self.connection.channel()
        if self.quorum:
            self.channel.confirm_delivery()

    def keep(self, queue: str, letter: Fetched) -> None:
        """Leave ``letter`` in the dead-letter queue.

        Classic queues: nothing to do now; closing the channel puts every message not
        acked back, and a classic queue counts nothing. Quorum queues: a confirmed copy
        first (with its headers: the reason it died stays), then the fetched one goes.
        """
        if not self.quorum:
            return
        self.channel.basic_publish("", xq_name(queue), letter.body, letter.properties)
        self.channel.basic_ack(letter.tag)

    def close(self) -> None:
        try:
            if self.channel.is_open:
                self.channel.close()
        finally:
            if self.connection.is_open:
                self.connection.close()


def process(
    broker: dramatiq.Broker,
    wanted: DeadLetterFilter,
    *,
    redrive: bool,
    limit: int = 1000,
    max_scanned: int | None = None,
) -> list[DeadLetter]:
    """The dead letters matching ``wanted`` (at most ``limit``, looking at no more than
    ``max_scanned`` messages when given); with ``redrive``, re-driven."""
    if not isinstance(broker, RabbitmqBroker):
        return []
    queues = [wanted.queue] if wanted.queue else sorted(broker.get_declared_queues())
    found: list[DeadLetter] = []
    scanned = 0
    letters = _Letters(broker)
    try:
        for queue in queues:
            if len(found) >= limit:
                break
            broker.declare_queue(queue, ensure=True)
            # Fetching stops at the limit: the letters not fetched stay where they are,
            # like those fetched and kept.
            for fetched in _walk(letters.channel, queue):
                scanned += 1
                if max_scanned is not None and scanned > max_scanned:
                    letters.keep(queue, fetched)
                    break
                message = fetched.message
                letter = None
                if message is None:
                    logger.warning(
                        "Leaving an undecodable dead letter in %s: %r", queue, fetched.body[:100]
                    )
                # A job id filter tells letters apart without reading their jobs.
                elif wanted.job_id is None or message.message_id == wanted.job_id:
                    letter = _describe(message, queue)
                if message is None or letter is None or not _matches(letter, wanted):
                    letters.keep(queue, fetched)
                    continue
                found.append(letter)
                if redrive:
                    _redrive(broker, letters.channel, fetched.tag, message, letter)
                else:
                    letters.keep(queue, fetched)
                if len(found) >= limit:
                    break
    finally:
        # Closing the channel puts every message not acked back into its queue.
        letters.close()
    return found


#: Job states that mean a message should still be on its way to a worker.
_IN_FLIGHT = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.RETRYING})


def sweep(broker: dramatiq.Broker, *, max_scanned: int = 1000) -> list[str]:
    """Fail the jobs whose messages RabbitMQ dead-lettered by itself; their ids.

    Past a quorum queue's delivery limit RabbitMQ moves a message to its dead-letter
    queue without a worker seeing it, so nothing recorded the end of its job, which would
    stay queued, retrying or running forever. Such a job fails here (``DeliveryLimitExceeded``),
    like a poison message; its letter stays, to be re-driven. Looks at no more than
    ``max_scanned`` letters per call (those kept go to the back of a quorum queue, so
    the next call sees others).
    """
    if not isinstance(broker, RabbitmqBroker):
        return []
    failed: list[str] = []
    scanned = 0
    letters = _Letters(broker)
    try:
        for queue in sorted(broker.get_declared_queues()):
            broker.declare_queue(queue, ensure=True)
            for fetched in _walk(letters.channel, queue):
                scanned += 1
                message = fetched.message
                if (
                    message is not None
                    and fetched.killed_by_rabbitmq
                    and _fail_undelivered(message.message_id, fetched)
                ):
                    failed.append(message.message_id)
                letters.keep(queue, fetched)
                if scanned >= max_scanned:
                    return failed
    finally:
        letters.close()
    return failed


def _fail_undelivered(job_id: str, fetched: Fetched) -> bool:
    headers = fetched.properties.headers or {}
    deliveries = headers.get("x-delivery-count")
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or JobState(job.state) not in _IN_FLIGHT:
            return False
        try:
            transition(
                session,
                job_id,
                JobState.FAILED,
                only_from=_IN_FLIGHT,
                attempt=job.attempts,
                values={
                    "finished_at": utcnow(),
                    "error_type": "DeliveryLimitExceeded",
                    "error_message": (
                        "RabbitMQ dead-lettered its message past the queue's delivery limit"
                        + (f" ({deliveries} deliveries)" if deliveries is not None else "")
                    ),
                    "error_traceback": None,
                },
                kind=JobState.FAILED.value,
                data={"reason": "delivery_limit", "dead_lettered": True},
            )
        except (InvalidTransition, StaleAttempt):
            return False  # It moved on meanwhile: someone recorded its end.
        enqueue_delivery(session, job_id)
    logger.error(
        "Job %s failed: RabbitMQ dead-lettered its message past the delivery limit.", job_id
    )
    return True


def _redrive(
    broker: dramatiq.Broker, channel: Any, tag: int, message: Message[Any], letter: DeadLetter
) -> None:
    if letter.job_state in (JobState.FAILED.value, JobState.CANCELLED.value):
        control.retry(letter.job_id, broker=broker)
    elif letter.job_state is None:
        # No row (pruned, or sent from outside jobstack): send the message itself again;
        # the worker creates its row.
        broker.enqueue(message.copy(options={"retries": 0}))
    else:
        logger.info(
            "Job %s is %s; dropping its stale dead letter.", letter.job_id, letter.job_state
        )
    channel.basic_ack(tag)
