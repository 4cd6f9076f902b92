"""Publishing job rows as messages, and recording when RabbitMQ confirmed them.

The job row is the outbox: it is committed before anything is published, and rows
whose publish failed or never happened are published again by the relay.

``published_at`` is the moment a message RabbitMQ confirmed was sent to it (see
:class:`~app.outbox.confirms.Confirmed` for why not the confirm's arrival), taken then; the
row is updated a little later, in bulk, with that moment. The update never
waits for a row lock: a row a worker holds right now (it is starting or finishing the
job) is skipped and marked in a later pass. Waiting for it could deadlock with the
worker's batch of state changes, which locks its rows in another order.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from app import db
from app.models import Job
from app.outbox.confirms import Confirmed, publisher_for
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

JOBS: Table = Job.__table__  # type: ignore[assignment]


def publish(
    broker: Broker, messages: Sequence[Message[Any]], *, mark_soon: bool = False
) -> list[str]:
    """Publish ``messages`` in order; stop at the first failure. Returns the ids published.

    With publisher confirms on, a publish returns once RabbitMQ has the message, so the
    ids returned are safe to mark as published: at once, or with ``mark_soon`` in the
    next bulk update of :data:`published_marks`.
    """
    confirmed = send(broker, messages)
    marks = {message_id: at for message_id, at in confirmed}
    if marks and mark_soon:
        published_marks.add(marks)
    elif marks:
        published_marks.write_now(marks)
    return list(marks)


def send(broker: Broker, messages: Sequence[Message[Any]]) -> list[Confirmed]:
    """Publish ``messages`` in order, stopping at the first failure, and record nothing:
    returns those the broker confirmed, with the moment each was sent, for the caller to
    mark (the relay on PostgreSQL marks them in the transaction that holds their rows)."""
    if isinstance(broker, RabbitmqBroker):
        # All sent, then one wait for RabbitMQ's confirms of all of them.
        try:
            confirmed = publisher_for(broker).publish(messages)
        except Exception:
            logger.warning(
                "Could not publish %d job(s); the relay will publish them later.",
                len(messages),
                exc_info=True,
            )
            confirmed = []
    else:
        confirmed = _publish_one_by_one(broker, messages)
    if len(confirmed) < len(messages):
        logger.warning(
            "%d of %d job(s) not confirmed by the broker; the relay will publish them later.",
            len(messages) - len(confirmed),
            len(messages),
        )
    return confirmed


def _publish_one_by_one(broker: Broker, messages: Sequence[Message[Any]]) -> list[Confirmed]:
    published: list[Confirmed] = []
    for message in messages:
        sent_at = utcnow()
        try:
            broker.enqueue(message)
        except Exception:
            logger.warning(
                "Could not publish job %s; the relay will publish it later.",
                message.message_id,
                exc_info=True,
            )
            break
        published.append(Confirmed(message.message_id, sent_at))
    return published


def mark_published(marks: Mapping[str, datetime]) -> dict[str, datetime]:
    """Record when the messages of the jobs in ``marks`` (id: moment sent) went to the
    broker. Returns the marks left for later: rows another transaction holds now.

    On PostgreSQL rows are locked with SKIP LOCKED, so this never waits for a worker and a
    worker waits at most for this short transaction; SQLite locks the whole database, and
    this waits its turn like every writer.
    """
    try:
        with db.session_scope() as session:
            if session.get_bind().dialect.name == "postgresql":
                free = _mark_in_one_statement(session, marks)
            else:
                free = _mark_row_by_row(session, marks)
            left = [job_id for job_id in marks if job_id not in free]
            if left:
                # Skipped rows are locked, or gone (pruned, deleted): only the first come
                # back. A plain read waits for no lock.
                left = list(session.scalars(select(Job.id).where(Job.id.in_(left))))
    except Exception:
        # The messages are out; the relay may publish them again, and workers skip
        # the duplicates, so this loses nothing.
        logger.warning("Could not mark %d job(s) published.", len(marks), exc_info=True)
        return {}
    return {job_id: marks[job_id] for job_id in left}


#: PostgreSQL: lock what is free, mark it, say what was free; one statement, one round trip.
_MARK_FREE_ROWS = text(
    """
    WITH free AS (
        SELECT id FROM jobs WHERE id = ANY(CAST(:ids AS varchar[]))
        FOR NO KEY UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE jobs SET published_at = marks.at
        FROM unnest(CAST(:ids AS varchar[]), CAST(:moments AS timestamptz[])) AS marks(id, at)
        WHERE jobs.id = ANY(ARRAY(SELECT id FROM free)) AND jobs.id = marks.id
            AND jobs.published_at IS NULL
    )
    SELECT id FROM free
    """
)


def _mark_in_one_statement(session: Session, marks: Mapping[str, datetime]) -> set[str]:
    """Mark the rows nobody holds; returns their ids."""
    ids = list(marks)
    rows = session.execute(_MARK_FREE_ROWS, {"ids": ids, "moments": [marks[i] for i in ids]})
    return {row.id for row in rows}


def _mark_row_by_row(session: Session, marks: Mapping[str, datetime]) -> set[str]:
    """SQLite: the database is this transaction's alone (BEGIN IMMEDIATE); mark them all."""
    free = set(session.scalars(select(Job.id).where(Job.id.in_(list(marks)))))
    if free:
        session.connection().execute(
            update(JOBS)
            .where(JOBS.c.id == bindparam("marked_id"), JOBS.c.published_at.is_(None))
            .values(published_at=bindparam("sent_at")),
            [{"marked_id": job_id, "sent_at": marks[job_id]} for job_id in free],
        )
    return free


#: Most ids in one pass of marks.
MARK_CHUNK = 1000
#: Passes a mark is tried before it is given up (its row stayed locked that long).
MARK_TRIES = 200


class PublishedMarks:
    """Marks published jobs in bulk: marks from every thread of the process, one short
    transaction per ``interval``, in a background thread.

    A mark lost with its process costs a duplicate publish by the relay after its grace
    period, and workers skip duplicates; a request saves a transaction.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._marks: dict[str, datetime] = {}
        self._tries: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, marks: Mapping[str, datetime]) -> None:
        if not marks:
            return
        with self._lock:
            self._marks.update(marks)
            if self._thread is None or self._pid != os.getpid():
                # First use in this process (a forked API worker has no thread yet).
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="jobstack-published-marks", daemon=True
                )
                self._thread.start()

    def write_now(self, marks: Mapping[str, datetime]) -> None:
        """Mark now, on the caller's thread; rows held by a worker wait for a later pass."""
        self.add(mark_published(marks))

    def flush(self) -> None:
        """Mark everything collected so far, now (once this returns, it is marked, but
        for rows another transaction holds: those are kept for the next pass)."""
        with self._flushing:
            with self._lock:
                marks, self._marks = self._marks, {}
            items = list(marks.items())
            left: dict[str, datetime] = {}
            for start in range(0, len(items), MARK_CHUNK):
                left.update(mark_published(dict(items[start : start + MARK_CHUNK])))
            self._keep_for_later(left)

    def _keep_for_later(self, left: dict[str, datetime]) -> None:
        with self._lock:
            for job_id in [job_id for job_id in self._tries if job_id not in left]:
                del self._tries[job_id]
            for job_id, at in left.items():
                tries = self._tries.get(job_id, 0) + 1
                if tries >= MARK_TRIES:
                    del self._tries[job_id]
                    logger.warning(
                        "Gave up marking job %s published (its row stayed locked).", job_id
                    )
                    continue
                self._tries[job_id] = tries
                self._marks.setdefault(job_id, at)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


published_marks = PublishedMarks()
atexit.register(published_marks.flush)
