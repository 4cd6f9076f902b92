"""Publishing job rows as messages, and recording that they were published.

The job row is the outbox: it is committed before anything is published, and rows
whose publish failed or never happened are published again by the relay.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import update

from app import db
from app.models import Job
from app.outbox.confirms import publisher_for
from app.timeutil import utcnow

logger = logging.getLogger(__name__)


def publish(
    broker: Broker, messages: Sequence[Message[Any]], *, mark_soon: bool = False
) -> list[str]:
    """Publish ``messages`` in order; stop at the first failure. Returns the ids published.

    With publisher confirms on, a publish returns once RabbitMQ has the message, so the
    ids returned are safe to mark as published: at once, or with ``mark_soon`` in the
    next bulk update of :data:`published_marks`.
    """
    if isinstance(broker, RabbitmqBroker):
        # All sent, then one wait for RabbitMQ's confirms of all of them.
        try:
            published = publisher_for(broker).publish(messages)
        except Exception:
            logger.warning(
                "Could not publish %d job(s); the relay will publish them later.",
                len(messages),
                exc_info=True,
            )
            published = []
    else:
        published = _publish_one_by_one(broker, messages)
    if len(published) < len(messages):
        logger.warning(
            "%d of %d job(s) not confirmed by the broker; the relay will publish them later.",
            len(messages) - len(published),
            len(messages),
        )
    if published and mark_soon:
        published_marks.add(published)
    elif published:
        mark_published(published)
    return published


def _publish_one_by_one(broker: Broker, messages: Sequence[Message[Any]]) -> list[str]:
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


class PublishedMarks:
    """Marks published jobs in bulk: ids from every thread of the process, one UPDATE
    per ``interval``, in a background thread.

    A mark lost with its process costs a duplicate publish by the relay after its grace
    period, and workers skip duplicates; a request saves a transaction.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._ids: list[str] = []
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, job_ids: Sequence[str]) -> None:
        with self._lock:
            self._ids.extend(job_ids)
            if self._thread is None or self._pid != os.getpid():
                # First use in this process (a forked API worker has no thread yet).
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="jobstack-published-marks", daemon=True
                )
                self._thread.start()

    def flush(self) -> None:
        """Mark everything collected so far, now (once this returns, it is marked)."""
        with self._flushing:
            with self._lock:
                ids, self._ids = self._ids, []
            for start in range(0, len(ids), MARK_CHUNK):
                mark_published(ids[start : start + MARK_CHUNK])

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


#: Most ids in one UPDATE of published_at.
MARK_CHUNK = 1000

published_marks = PublishedMarks()
atexit.register(published_marks.flush)
