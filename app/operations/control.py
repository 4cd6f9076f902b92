"""Operator actions on jobs: cancel and retry."""

from __future__ import annotations

import dramatiq

from app import db
from app.jobs import get_job
from app.messages import message_for
from app.models import Job
from app.operations.cancellation import broadcast_cancel
from app.outbox.after_commit import publish_after_commit
from app.states import JobState
from app.timeutil import utcnow
from app.transitions import append_event, transition
from app.webhooks import enqueue_delivery

CANCELLABLE = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING})
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED})


def cancel(
    job_id: str,
    *,
    tenant: str | None = None,
    reason: str = "requested",
    broker: dramatiq.Broker | None = None,
) -> Job:
    """Cancel a job that has not finished.

    A scheduled, queued or retrying job is ``cancelled`` at once; its message, if any, is
    skipped by workers. A running job is flagged and its workers told: it stops at its
    next checkpoint, or is interrupted after the grace period, and then ends
    ``cancelled``. Raises JobNotFound (also for another tenant's job) or
    InvalidTransition (the job has finished).
    """
    with db.session_scope() as session:
        job = get_job(job_id, tenant=tenant, session=session)
        running = job.state == JobState.RUNNING.value
        if running:
            if job.cancel_requested_at is None:
                append_event(
                    session,
                    job_id,
                    "cancel_requested",
                    values={"cancel_requested_at": utcnow()},
                    data={"reason": reason},
                )
        else:
            transition(
                session,
                job_id,
                JobState.CANCELLED,
                only_from=CANCELLABLE,
                values={"finished_at": utcnow(), "cancel_requested_at": utcnow()},
                kind="cancelled",
                data={"reason": reason},
            )
            enqueue_delivery(session, job_id)
    if running:
        broadcast_cancel(broker or dramatiq.get_broker(), job_id)
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
