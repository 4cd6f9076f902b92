"""Rows for tests that need a job in a given state without running anything."""

from __future__ import annotations

from dramatiq.message import generate_unique_id

from app import db
from app.models import Job, JobEvent
from app.states import JobState
from app.timeutil import utcnow


def make_job(state: JobState = JobState.QUEUED, *, attempts: int = 0, actor: str = "t.x") -> str:
    """Insert a job in ``state`` with its creation event; returns its id."""
    now = utcnow()
    job_id = generate_unique_id()
    with db.session_scope() as session:
        session.add(
            Job(
                id=job_id,
                actor=actor,
                queue="default",
                args=[],
                kwargs={},
                state=state.value,
                attempts=attempts,
                created_at=now,
                updated_at=now,
                last_event_seq=1,
            )
        )
        session.add(JobEvent(job_id=job_id, seq=1, at=now, kind="created", to_state=state.value))
    return job_id
