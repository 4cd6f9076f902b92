"""What the job database tells the API's ``/metrics``: jobs by queue and state, the oldest
queued job, the outbox, the workers alive and the last success of each schedule.

Three queries, each one statement for all queues or schedules. They work on SQLite and
PostgreSQL alike; the count of jobs by state reads every row kept (retention bounds them).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from app.defaults import CRON_KEY_PREFIX
from app.models import DEFAULT_TENANT, Job, Worker
from app.states import JobState

#: States of the rows the outbox relay publishes once due (see app/outbox/relay.py).
UNPUBLISHED_STATES = (JobState.QUEUED.value, JobState.SCHEDULED.value, JobState.RETRYING.value)


@dataclass(frozen=True)
class JobCounts:
    """The database's numbers at one moment."""

    #: (queue, state): how many jobs.
    jobs: dict[tuple[str, str], int]
    #: queue: since when its oldest queued job waits.
    oldest_queued: dict[str, datetime]
    #: Jobs due and not yet published, and since when the oldest of them is due.
    outbox_pending: int
    outbox_oldest: datetime | None
    workers_alive: int
    #: schedule (its actor): when its last successful tick finished.
    cron_last_success: dict[str, datetime]


def read_job_counts(
    session: Session, *, now: datetime, gone_after: float, schedules: Collection[str]
) -> JobCounts:
    """The numbers at ``now``; ``schedules`` are the periodic actors to report on."""
    # A queued job waits since its last state change: its submit, its due time (the relay
    # queues a scheduled job then) or its requeue. A scheduled job or a retry is due at
    # its run_at.
    waiting_since = case((Job.state == JobState.QUEUED.value, Job.updated_at), else_=Job.run_at)
    # The rows the relay would publish now (app/outbox/relay.py), grace period aside.
    unpublished = and_(
        Job.published_at.is_(None),
        Job.state.in_(UNPUBLISHED_STATES),
        or_(Job.state == JobState.QUEUED.value, Job.run_at <= now),
    )
    rows = session.execute(
        select(
            Job.queue,
            Job.state,
            func.count(),
            func.min(waiting_since),
            func.sum(case((unpublished, 1), else_=0)),
            func.min(case((unpublished, waiting_since))),
        ).group_by(Job.queue, Job.state)
    ).all()
    jobs: dict[tuple[str, str], int] = {}
    oldest_queued: dict[str, datetime] = {}
    pending, pending_since = 0, []
    for queue, state, count, since, unpublished_count, unpublished_since in rows:
        jobs[(queue, state)] = count
        if state == JobState.QUEUED.value and since is not None:
            oldest_queued[queue] = since
        pending += unpublished_count or 0
        if unpublished_since is not None:
            pending_since.append(unpublished_since)

    alive = session.scalar(
        select(func.count())
        .select_from(Worker)
        .where(Worker.stopped_at.is_(None), Worker.last_seen >= now - timedelta(seconds=gone_after))
    )
    last_success = session.execute(
        select(Job.actor, func.max(Job.finished_at))
        .where(
            Job.actor.in_(list(schedules)),
            Job.tenant == DEFAULT_TENANT,
            Job.idempotency_key.like(f"{CRON_KEY_PREFIX}%"),
            Job.state == JobState.SUCCEEDED.value,
        )
        .group_by(Job.actor)
    ).all()
    return JobCounts(
        jobs=jobs,
        oldest_queued=oldest_queued,
        outbox_pending=pending,
        outbox_oldest=min(pending_since, default=None),
        workers_alive=alive or 0,
        cron_last_success={actor: at for actor, at in last_success if at is not None},
    )
