"""The outbox relay: publishes job rows that have no message in the broker.

That is: queued jobs whose publish failed or never happened (after a grace period, so
that a submitter still about to publish is not raced), scheduled jobs now due, and
retries that could not be enqueued. One relay is active at a time, chosen by a lease.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from dramatiq import Broker, Message
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app import db
from app.config import Settings
from app.errors import InvalidTransition, StaleAttempt
from app.messages import message_for
from app.models import Job
from app.outbox import leases
from app.outbox.publish import publish
from app.states import JobState
from app.timeutil import utcnow
from app.transitions import transition
from app.workers import worker_id

logger = logging.getLogger(__name__)

LEASE_NAME = "outbox-relay"


def due_messages(session: Session, *, grace: timedelta, limit: int) -> list[Message[Any]]:
    """Claim the rows to publish now and return their messages, oldest first.

    Due scheduled rows move to ``queued`` here, in the caller's transaction.
    """
    now = utcnow()
    rows = session.scalars(
        select(Job)
        .where(
            Job.published_at.is_(None),
            or_(
                and_(Job.state == JobState.QUEUED.value, Job.created_at <= now - grace),
                and_(
                    Job.state.in_([JobState.SCHEDULED.value, JobState.RETRYING.value]),
                    Job.run_at <= now,
                ),
            ),
        )
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


class Relay(threading.Thread):
    """Background thread of a worker process that runs relay passes while it holds the lease."""

    def __init__(self, broker: Broker, settings: Settings) -> None:
        super().__init__(name="jobstack-relay", daemon=True)
        self.broker = broker
        self.settings = settings
        self.holder = f"{worker_id()}:relay"
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.relay_interval):
            try:
                self.run_once()
            except Exception:
                logger.exception(
                    "Relay pass failed; trying again in %.1fs.", self.settings.relay_interval
                )

    def run_once(self) -> int:
        """One pass: renew the lease, publish what is due. Returns how many were published."""
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
        try:
            with db.session_scope() as session:
                leases.release(session, LEASE_NAME, self.holder)
        except Exception:
            logger.warning(
                "Could not release the relay lease; it expires by itself.", exc_info=True
            )
