"""Dead letters: listing what sits in ``<queue>.XQ`` and re-driving it.

A re-driven message's job goes back to ``queued`` as a new attempt (with a fresh retry
budget) and is published again; the dead letter is then acked away. Messages that do not
match the filter stay where they are. Nothing is decoded but Dramatiq's JSON messages.
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
from app.models import Job
from app.operations import control
from app.states import JobState

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


def _walk(channel: Any, queue: str) -> Iterator[tuple[int, Message[Any] | None, bytes]]:
    """Each message now in ``queue``'s dead-letter queue, fetched without acking."""
    pending = channel.queue_declare(xq_name(queue), passive=True).method.message_count
    for _ in range(pending):
        method, _properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
        if method is None:
            return
        try:
            yield method.delivery_tag, Message.decode(body), body
        except DecodeError:
            yield method.delivery_tag, None, body


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
    connection = pika.BlockingConnection(broker.parameters)
    try:
        channel = connection.channel()
        for queue in queues:
            if len(found) >= limit:
                break
            broker.declare_queue(queue, ensure=True)
            # Fetching stops at the limit: the letters not fetched stay where they are,
            # like those fetched and not acked.
            for tag, message, body in _walk(channel, queue):
                scanned += 1
                if max_scanned is not None and scanned > max_scanned:
                    break
                if message is None:
                    logger.warning(
                        "Leaving an undecodable dead letter in %s: %r", queue, body[:100]
                    )
                    continue
                if wanted.job_id is not None and message.message_id != wanted.job_id:
                    continue  # Told apart without reading its job.
                letter = _describe(message, queue)
                if not _matches(letter, wanted):
                    continue
                found.append(letter)
                if redrive:
                    _redrive(broker, channel, tag, message, letter)
                if len(found) >= limit:
                    break
        # Closing the channel puts every message not acked back into its queue.
        channel.close()
    finally:
        if connection.is_open:
            connection.close()
    return found


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
