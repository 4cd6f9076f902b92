"""Publishing job rows as messages, and recording that they were published.

The job row is the outbox: it is committed before anything is published, and rows
whose publish failed or never happened are published again by the relay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dramatiq import Broker, Message
from sqlalchemy import update

from app import db
from app.models import Job
from app.timeutil import utcnow

logger = logging.getLogger(__name__)


def publish(broker: Broker, messages: Sequence[Message[Any]]) -> list[str]:
    """Publish ``messages`` in order; stop at the first failure. Returns the ids published.

    With publisher confirms on, a publish returns once RabbitMQ has the message, so the
    ids returned are safe to mark as published.
    """
    published: list[str] = []
    for message in messages:
        try:
            broker.enqueue(message)
        except Exception:
            logger.warning(
                "Could not publish job %s; the relay will publish it later.",
                message.message_id,
                exc_info=True,
            )
            break
        published.append(message.message_id)
    if published:
        mark_published(published)
    return published


def mark_published(job_ids: Sequence[str]) -> None:
    """Record that the messages of ``job_ids`` reached the broker."""
    try:
        with db.session_scope() as session:
            session.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.published_at.is_(None))
                .values(published_at=utcnow())
            )
    except Exception:
        # The messages are out; the relay may publish them again, and workers skip
        # the duplicates, so this loses nothing.
        logger.warning("Could not mark %d job(s) published.", len(job_ids), exc_info=True)
