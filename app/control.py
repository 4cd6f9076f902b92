"""Operator actions on jobs: cancel and retry."""

from __future__ import annotations

import dramatiq

from app import db
from app.jobs import get_job, publish_after_commit
from app.messages import message_for
from app.models import Job
from app.states import JobState
from app.timeutil import utcnow
from app.transitions import transition

CANCELLABLE = frozenset({JobState.SCHEDULED, JobState.QUEUED})
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED})


def cancel(job_id: str, *, tenant: str | None = None, reason: str = "requested") -> Job:
    """Cancel a scheduled or queued job; its message, if any, is skipped by workers.

    Raises JobNotFound (also for another tenant's job) or InvalidTransition.
    """
    with db.session_scope() as session:
        get_job(job_id, tenant=tenant, session=session)
        transition(
            session,
            job_id,
            JobState.CANCELLED,
            only_from=CANCELLABLE,
            values={"finished_at": utcnow()},
            kind="cancelled",
            data={"reason": reason},
        )
    return get_job(job_id)


def retry(job_id: str, *, tenant: str | None = None, broker: dramatiq.Broker | None = None) -> Job:
    """Queue a failed or cancelled job again as a new attempt, and publish it after commit.

    The new message has a fresh retry budget (the actor's ``max_retries``).
    """
    with db.session_scope() as session:
        get_job(job_id, tenant=tenant, session=session)
        transition(
            session,
            job_id,
            JobState.QUEUED,
            only_from=RETRYABLE,
            values={"published_at": None, "finished_at": None, "run_at": None},
            kind="retry_requested",
        )
        job = get_job(job_id, session=session)
        session.refresh(job)
        publish_after_commit(session, broker or dramatiq.get_broker(), message_for(job))
    return get_job(job_id)
