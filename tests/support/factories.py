"""Rows and messages for tests that need a job in a given state without running anything."""

from __future__ import annotations

from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.message import generate_unique_id

from app import db
from app.messages import ATTEMPTS_OPTION
from app.models import Job, JobEvent
from app.states import JobState
from app.timeutil import utcnow


def make_job(
    state: JobState = JobState.QUEUED, *, attempts: int = 0, actor: str = "t.x", **fields: Any
) -> str:
    """Insert a job in ``state`` with its creation event; returns its id. ``fields`` sets
    other columns (``tenant``, ``error_message``, ``finished_at``…)."""
    now = utcnow()
    job_id = generate_unique_id()
    with db.session_scope() as session:
        session.add(
            Job(
                **{
                    "id": job_id,
                    "actor": actor,
                    "queue": "default",
                    "args": [],
                    "kwargs": {},
                    "state": state.value,
                    "attempts": attempts,
                    "created_at": now,
                    "updated_at": now,
                    "last_event_seq": 1,
                    **fields,
                }
            )
        )
        session.add(JobEvent(job_id=job_id, seq=1, at=now, kind="created", to_state=state.value))
    return job_id


def delivered_message(job_id: str, *, sent_after: int = 0) -> MessageProxy:
    """The message of ``job_id`` as a worker receives it, sent after ``sent_after`` attempts."""
    return MessageProxy(
        Message(
            queue_name="default",
            actor_name="t.x",
            args=(),
            kwargs={},
            options={ATTEMPTS_OPTION: sent_after},
            message_id=job_id,
        )
    )
