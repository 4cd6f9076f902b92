"""The one function that moves a job between states, and the event log it writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from app.errors import InvalidTransition, JobNotFound, StaleAttempt
from app.models import Job, JobEvent
from app.states import JobState, is_allowed
from app.timeutil import utcnow

#: How often a transition is re-evaluated when another writer changed the row between
#: our read and our conditional UPDATE.
MAX_RACE_RETRIES = 3


@dataclass(frozen=True)
class Transition:
    """What a successful transition did."""

    job_id: str
    from_state: JobState
    to_state: JobState
    attempts: int
    seq: int


def transition(
    session: Session,
    job_id: str,
    to_state: JobState,
    *,
    only_from: frozenset[JobState] | None = None,
    attempt: int | None = None,
    new_attempt: bool = False,
    values: Mapping[str, Any] | None = None,
    kind: str = "transition",
    data: dict[str, Any] | None = None,
) -> Transition:
    """Move ``job_id`` to ``to_state`` and append the event, in the caller's transaction.

    The UPDATE is conditional on the state and attempt count read just before, so a
    concurrent writer (cancel against start, a duplicate delivery) makes it match no
    row; the move is then judged again on the fresh row. ``only_from`` narrows the
    allowed source states; ``attempt`` requires the job to still be on that attempt
    (otherwise :class:`StaleAttempt`); ``new_attempt`` counts one more attempt.
    ``values`` sets other columns.
    """
    values = dict(values or {})
    for _ in range(MAX_RACE_RETRIES):
        row = session.execute(select(Job.state, Job.attempts).where(Job.id == job_id)).one_or_none()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        from_state, attempts = JobState(row.state), row.attempts
        if attempt is not None and attempts != attempt:
            raise StaleAttempt(f"job {job_id} is on attempt {attempts}, not {attempt}")
        if not is_allowed(from_state, to_state) or (
            only_from is not None and from_state not in only_from
        ):
            raise InvalidTransition(job_id, from_state, to_state)

        new_attempts = attempts + 1 if new_attempt else attempts
        now = utcnow()
        changes = {
            **values,
            "attempts": new_attempts,
            "state": to_state.value,
            "updated_at": now,
            "last_event_seq": Job.last_event_seq + 1,
        }
        seq = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == from_state.value, Job.attempts == attempts)
            .values(changes)
            .returning(Job.last_event_seq)
        ).scalar_one_or_none()
        if seq is None:
            continue
        session.execute(
            insert(JobEvent).values(
                job_id=job_id,
                seq=seq,
                at=now,
                kind=kind,
                from_state=from_state.value,
                to_state=to_state.value,
                attempt=new_attempts,
                data=data,
            )
        )
        return Transition(job_id, from_state, to_state, new_attempts, seq)
    raise StaleAttempt(f"job {job_id} kept changing under {to_state.value}; gave up")


def append_event(
    session: Session,
    job_id: str,
    kind: str,
    *,
    values: Mapping[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> int:
    """Append a non-transition event (such as progress), updating ``values``; returns its seq."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values({**(values or {}), "updated_at": now, "last_event_seq": Job.last_event_seq + 1})
        .returning(Job.last_event_seq, Job.attempts)
    ).one_or_none()
    if row is None:
        raise JobNotFound(f"no job with id {job_id}")
    session.execute(
        insert(JobEvent).values(
            job_id=job_id,
            seq=row.last_event_seq,
            at=now,
            kind=kind,
            attempt=row.attempts,
            data=data,
        )
    )
    return int(row.last_event_seq)
