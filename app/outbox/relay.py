"""The outbox relay: publishes job rows that have no message in the broker.

That is: queued jobs whose publish failed or never happened (after a grace period, so
that a submitter still about to publish is not raced), scheduled jobs now due, and
retries that could not be enqueued.

On PostgreSQL every worker process relays, and concurrent relays share the work by row
locks: a pass locks the rows it publishes (``FOR NO KEY UPDATE SKIP LOCKED``, so relays
never wait for each other and never take the same row) and keeps them locked until it
has recorded ``published_at`` in the same transaction. Publishing scales with the worker
processes, and an idle relay only reads: no lease to renew, and no hand-over delay when a
process dies.

On SQLite (no SKIP LOCKED; one writer at a time, so holding the database over a publish
would stop every other writer) one relay at a time, chosen by a lease, publishes after
its transaction commits and marks ``published_at`` afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from dramatiq import Broker, Message
from sqlalchemy import ColumnElement, and_, or_, select, text
from sqlalchemy.orm import Session

from app import db
from app.config import Settings
from app.errors import InvalidTransition, StaleAttempt
from app.messages import message_for
from app.models import Job
from app.outbox import leases
from app.outbox.confirms import CONFIRM_TIMEOUT, Confirmed
from app.outbox.publish import publish, send
from app.states import JobState
from app.timeutil import utcnow
from app.transitions import transition
from app.workers import worker_id

logger = logging.getLogger(__name__)

LEASE_NAME = "outbox-relay"

#: PostgreSQL: how long a pass's transaction may sit idle (it is while it publishes)
#: before the server ends it. The publish gives up after CONFIRM_TIMEOUT; this frees the
#: rows of a relay whose host froze or lost the network, which TCP would notice only
#: after hours, and whose rows no other relay may publish and no worker may start.
CLAIM_IDLE_TIMEOUT_MS = int((CONFIRM_TIMEOUT + 30) * 1000)

#: PostgreSQL: the confirmed rows' ``published_at``, in the claiming transaction.
_MARK_CLAIMED = text(
    """
    UPDATE jobs SET published_at = marks.at
    FROM unnest(CAST(:ids AS varchar[]), CAST(:moments AS timestamptz[])) AS marks(id, at)
    WHERE jobs.id = marks.id AND jobs.published_at IS NULL
    """
)


def _due(grace: timedelta, *, scheduled: bool = True) -> ColumnElement[bool]:
    """Of the unpublished rows, those to publish now: queued ones past the grace, retries
    (and, with ``scheduled``, scheduled jobs) whose time has come."""
    now = utcnow()
    states = [JobState.RETRYING.value]
    if scheduled:
        states.append(JobState.SCHEDULED.value)
    return or_(
        and_(Job.state == JobState.QUEUED.value, Job.created_at <= now - grace),
        and_(Job.state.in_(states), Job.run_at <= now),
    )


def due_messages(session: Session, *, grace: timedelta, limit: int) -> list[Message[Any]]:
    """SQLite: the rows to publish now as messages, oldest first.

    Due scheduled rows move to ``queued`` here, in the caller's transaction.
    """
    rows = session.scalars(
        select(Job)
        .where(Job.published_at.is_(None), _due(grace))
        .order_by(Job.run_at, Job.created_at)
        .limit(limit)
    ).all()
    messages = []
    for job in rows:
        if job.state == JobState.SCHEDULED.value:
            try:
                transition(session, job.id, JobState.QUEUED, attempt=job.attempts, kind="due")
            except (InvalidTransition, StaleAttempt):
                continue  # Cancelled or changed meanwhile.
            session.refresh(job)
        messages.append(message_for(job))
    return messages


def queue_due_scheduled(session: Session, *, limit: int) -> list[str]:
    """PostgreSQL: move due scheduled jobs to ``queued``; returns their ids.

    In a transaction of its own, committed before any of them is published: a worker
    reads a job's state without waiting for a lock, and would skip (and ack) a message
    whose job it still saw ``scheduled``.
    """
    rows = session.execute(
        select(Job.id, Job.attempts)
        .where(
            Job.published_at.is_(None),
            Job.state == JobState.SCHEDULED.value,
            Job.run_at <= utcnow(),
        )
        .order_by(Job.run_at, Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)
    ).all()
    queued = []
    for job_id, attempts in rows:
        try:
            transition(session, job_id, JobState.QUEUED, attempt=attempts, kind="due")
        except (InvalidTransition, StaleAttempt):
            continue  # Cancelled or changed meanwhile.
        queued.append(job_id)
    return queued


def claim_due(
    session: Session, *, grace: timedelta, limit: int, also: Sequence[str] = ()
) -> list[Job]:
    """PostgreSQL: lock and return the rows to publish now, oldest first, skipping rows
    another transaction holds (another relay's, a worker's); ``also`` adds queued rows
    that are due although younger than the grace (scheduled jobs just queued).

    NO KEY UPDATE rather than UPDATE: it excludes the other relays and the writers of
    the row as well, and lets events be inserted for the job meanwhile (their foreign
    key takes a KEY SHARE lock on it).
    """
    due = _due(grace, scheduled=False)
    if also:
        due = or_(due, and_(Job.id.in_(also), Job.state == JobState.QUEUED.value))
    return list(
        session.scalars(
            select(Job)
            .where(Job.published_at.is_(None), due)
            .order_by(Job.run_at, Job.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True)
        )
    )


def mark_claimed(session: Session, confirmed: Sequence[Confirmed]) -> None:
    """PostgreSQL: record the confirmed messages' ``published_at``; the caller holds the
    rows (one statement, one round trip)."""
    session.execute(
        _MARK_CLAIMED,
        {"ids": [c.message_id for c in confirmed], "moments": [c.at for c in confirmed]},
    )


class Relay(threading.Thread):
    """Background thread of a worker process that runs relay passes."""

    def __init__(self, broker: Broker, settings: Settings) -> None:
        super().__init__(name="jobstack-relay", daemon=True)
        self.broker = broker
        self.settings = settings
        self.holder = f"{worker_id()}:relay"
        self._stop_event = threading.Event()

    def run(self) -> None:
        wait = self.settings.relay_interval
        while not self._stop_event.wait(wait):
            try:
                published = self.run_once()
            except Exception:
                logger.exception(
                    "Relay pass failed; trying again in %.1fs.", self.settings.relay_interval
                )
                published = 0
            # A full batch published says more may be waiting: the next pass starts at
            # once, so a backlog goes out at the publishing rate rather than relay_batch
            # per relay_interval. A short batch (or a failing broker) waits the interval.
            full = published >= self.settings.relay_batch
            wait = 0 if full else self.settings.relay_interval

    def run_once(self) -> int:
        """One pass: publish what is due, at most ``relay_batch`` rows. Returns how many
        were published."""
        if self._claims_rows():
            return self._publish_claimed()
        return self._publish_under_lease()

    def _claims_rows(self) -> bool:
        return db.get_engine().dialect.name == "postgresql"

    def _publish_claimed(self) -> int:
        """PostgreSQL: lock due rows, publish them, mark them, commit: the lock is held
        until ``published_at`` is recorded, so no other relay can take the same rows
        between the publish and the mark. If the process dies mid-publish, its
        transaction rolls back: the rows are free and unmarked, and another relay
        publishes them again (the workers skip the duplicates of any that went out).

        A worker given one of these messages before the commit waits for it: its start
        locks the row. That is the pass's publish and mark (about 0.1 s for 500 rows); the
        relay itself never waits for a row lock, so it cannot be half of a deadlock."""
        limit = self.settings.relay_batch
        with db.session_scope() as session:
            just_queued = queue_due_scheduled(session, limit=limit)
            if not just_queued:
                # Nothing written yet: an idle pass is one read-only transaction.
                return self._publish_locked(session, also=())
        with db.session_scope() as session:
            return self._publish_locked(session, also=just_queued)

    def _publish_locked(self, session: Session, *, also: Sequence[str]) -> int:
        jobs = claim_due(
            session,
            grace=timedelta(seconds=self.settings.relay_grace),
            limit=self.settings.relay_batch,
            also=also,
        )
        if not jobs:
            return 0
        session.execute(
            text(f"SET LOCAL idle_in_transaction_session_timeout = {CLAIM_IDLE_TIMEOUT_MS}")
        )
        confirmed = send(self.broker, [message_for(job) for job in jobs])
        if confirmed:
            mark_claimed(session, confirmed)
        logger.info("Relay published %d of %d due job(s).", len(confirmed), len(jobs))
        return len(confirmed)

    def _publish_under_lease(self) -> int:
        """SQLite: renew the lease, then publish what is due after the commit."""
        with db.session_scope() as session:
            ttl = timedelta(seconds=self.settings.relay_lease)
            if not leases.acquire(session, LEASE_NAME, self.holder, ttl):
                return 0
            messages = due_messages(
                session,
                grace=timedelta(seconds=self.settings.relay_grace),
                limit=self.settings.relay_batch,
            )
        if not messages:
            return 0
        published = publish(self.broker, messages)
        logger.info("Relay published %d of %d due job(s).", len(published), len(messages))
        return len(published)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=self.settings.relay_interval + 5)
        if self._claims_rows():
            return  # No lease taken.
        try:
            with db.session_scope() as session:
                leases.release(session, LEASE_NAME, self.holder)
        except Exception:
            logger.warning(
                "Could not release the relay lease; it expires by itself.", exc_info=True
            )
