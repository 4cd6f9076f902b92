"""Submitting jobs and reading them back.

``submit`` writes the job row and publishes its message after the row's transaction
commits, so a rolled-back transaction never leaves a message behind and a failed
publish never loses the job (the relay publishes it later).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq import Actor
from dramatiq.message import generate_unique_id
from sqlalchemy import Insert, Table, bindparam, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.context import JobContext, current_job
from app.defaults import DEFAULT_MAX_RETRIES, MAX_PRIORITY, RESERVED_KEY_PREFIXES
from app.errors import JobNotFound, SubmitError, UnknownActor, UnknownQueue
from app.messages import message_for
from app.models import DEFAULT_TENANT, Job, JobEvent
from app.observability.tracing import creation_span, note_existing_job
from app.outbox.after_commit import publish_after_commit
from app.outbox.publish import publish
from app.states import JobState
from app.timeutil import utcnow
from app.uniqueness import find_duplicate, unique_key_for

__all__ = [
    "JobContext",
    "SubmitBatch",
    "current_job",
    "get_job",
    "list_events",
    "list_jobs",
    "submit",
]


class SubmitBatch:
    """Jobs submitted together in one transaction of ``session`` (the API's batch route).

    Jobs without an idempotency or unique key conflict with nothing, so instead of one
    ORM object pair per job and a unit-of-work flush (most of a 1,000-job batch's time),
    their rows are written by :meth:`write` with one multi-row INSERT per table. Jobs with
    a key take the usual path in the same session. The caller calls :meth:`write`, then
    commits; messages are published after the commit as for any ``submit(session=...)``.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._jobs: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._messages: list[tuple[dramatiq.Broker, dramatiq.Message[Any]]] = []

    def add(self, job: Job, actor: Actor[Any, Any], state: JobState) -> None:
        if state is JobState.QUEUED:
            # Built now, registered for after the commit once the rows are written.
            self._messages.append((actor.broker, message_for(job)))
        self._jobs.append({key: getattr(job, key) for key in _job_columns()})
        self._events.append(
            {
                "job_id": job.id,
                "seq": 1,
                "at": job.created_at,
                "kind": "created",
                "to_state": state.value,
            }
        )

    def write(self) -> None:
        """Insert the rows added so far in the session's transaction (not committed)."""
        if not self._jobs:
            return
        jobs: Table = Job.__table__  # type: ignore[assignment]
        events: Table = JobEvent.__table__  # type: ignore[assignment]
        # executemany: SQLAlchemy sends these as multi-row INSERTs ("insertmanyvalues").
        self.session.execute(insert(jobs), self._jobs)
        self.session.execute(insert(events), self._events)
        for broker, message in self._messages:
            publish_after_commit(self.session, broker, message)
        self._jobs, self._events, self._messages = [], [], []


def resolve_actor(actor: Actor[Any, Any] | str) -> Actor[Any, Any]:
    """The actor itself, or the one registered under that name."""
    if not isinstance(actor, str):
        return actor
    try:
        return dramatiq.get_broker().get_actor(actor)
    except dramatiq.errors.ActorNotFound:
        raise UnknownActor(f"no actor named {actor!r}") from None


def _check_json(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise SubmitError(f"{name} must be JSON-serializable: {error}") from None


def _due_time(delay: timedelta | int | None, run_at: datetime | None) -> datetime | None:
    if delay is not None and run_at is not None:
        raise SubmitError("give delay or run_at, not both")
    if delay is not None:
        if isinstance(delay, int):
            delay = timedelta(milliseconds=delay)
        if delay < timedelta(0):
            raise SubmitError("delay must not be negative")
        return utcnow() + delay
    if run_at is not None and run_at.tzinfo is None:
        raise SubmitError("run_at must be timezone-aware")
    return run_at


def submit(
    actor: Actor[Any, Any] | str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: timedelta | int | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    max_retries: int | None = None,
    session: Session | None = None,
    tenant: str = DEFAULT_TENANT,
    correlation_id: str | None = None,
    callback_url: str | None = None,
    request_fingerprint: str | None = None,
    batch: SubmitBatch | None = None,
) -> Job:
    """Create a durable job for ``actor`` and publish it once its row is committed.

    ``delay`` is a timedelta or milliseconds (as in Dramatiq); ``run_at`` an aware
    datetime. A job due later is ``scheduled`` and published by the relay when due.
    With ``session`` the job joins the caller's transaction and is published after the
    caller commits; without, it is committed here. With ``idempotency_key``, a job
    already submitted under that key (in ``tenant``) is returned instead of a new one;
    its ``request_fingerprint`` tells the caller whether it came from the same request.
    With ``batch`` (instead of ``session``), the job joins the batch's transaction and its
    rows are written by the batch (see :class:`SubmitBatch`).
    """
    resolved = resolve_actor(actor)
    kwargs = dict(kwargs or {})
    _check_json("args", list(args))
    _check_json("kwargs", kwargs)
    if priority is not None and not 0 <= priority <= MAX_PRIORITY:
        raise SubmitError(f"priority must be between 0 and {MAX_PRIORITY}, not {priority}")
    if max_retries is not None and max_retries < 0:
        raise SubmitError("max_retries must not be negative")
    due = _due_time(delay, run_at)
    now = utcnow()
    state = JobState.SCHEDULED if due is not None and due > now else JobState.QUEUED
    queue_name = queue or resolved.queue_name
    if queue_name not in resolved.broker.get_declared_queues():
        # Declaring it here would let any caller create queues (three each, with .DQ
        # and .XQ) and make every worker open consumers for them.
        known = ", ".join(sorted(resolved.broker.get_declared_queues()))
        raise UnknownQueue(
            f"queue {queue_name!r} is not declared; use one of: {known} "
            "(operators add queues with JOBSTACK_QUEUES or an actor's queue_name)"
        )
    if (
        idempotency_key is not None
        and idempotency_key.startswith(RESERVED_KEY_PREFIXES)
        and tenant != DEFAULT_TENANT
    ):
        raise SubmitError(
            f"idempotency keys starting with {' or '.join(RESERVED_KEY_PREFIXES)} are "
            "reserved for jobs jobstack submits itself"
        )

    unique_key = unique_key_for(resolved, args, kwargs)
    job_id = generate_unique_id()
    # The job's trace starts here (when tracing is on): its row keeps the context, and
    # every message of the job continues it.
    with creation_span(queue_name, job_id, resolved.actor_name, correlation_id) as trace_context:
        job = Job(
            id=job_id,
            actor=resolved.actor_name,
            queue=queue_name,
            args=list(args),
            kwargs=kwargs,
            state=state.value,
            priority=priority or 0,
            attempts=0,
            max_retries=max_retries
            if max_retries is not None
            else resolved.options.get("max_retries", DEFAULT_MAX_RETRIES),
            progress=0,
            idempotency_key=idempotency_key,
            request_fingerprint=request_fingerprint,
            unique_key=unique_key,
            correlation_id=correlation_id,
            callback_url=callback_url,
            tenant=tenant,
            created_at=now,
            updated_at=now,
            run_at=due,
            last_event_seq=1,
            trace_context=trace_context,
        )
        if batch is not None and idempotency_key is None and unique_key is None:
            batch.add(job, resolved, state)
            return job
        return _store(job, resolved, state, batch.session if batch is not None else session)


def _store(job: Job, actor: Actor[Any, Any], state: JobState, session: Session | None) -> Job:
    """Write ``job`` (or find the one its keys name) and publish it after the commit."""
    created = JobEvent(
        job_id=job.id, seq=1, at=job.created_at, kind="created", to_state=state.value
    )
    idempotency_key, unique_key, tenant = job.idempotency_key, job.unique_key, job.tenant
    if (
        session is None
        and idempotency_key is None
        and unique_key is None
        and db.get_engine().dialect.name == "postgresql"
    ):
        # The common single submission: one statement, committed on its own.
        _insert_in_one_statement(job, state)
        if state is JobState.QUEUED:
            publish(actor.broker, [message_for(job)], mark_soon=True)
        return job

    own_session = session is None
    active = session if session is not None else db.new_session()
    try:
        existing = _existing(active, actor, tenant, idempotency_key, unique_key)
        if existing is not None:
            note_existing_job(existing.id)
            return existing
        if idempotency_key is None and unique_key is None:
            # A fresh id conflicts with nothing: no SAVEPOINT round trips, and the rows
            # of a batch are flushed together at commit.
            active.add_all([job, created])
        else:
            try:
                with active.begin_nested():
                    active.add_all([job, created])
            except IntegrityError:
                # A concurrent submission took the key first: that job is this one.
                existing = _existing(active, actor, tenant, idempotency_key, unique_key)
                if existing is None:
                    raise
                note_existing_job(existing.id)
                return existing
        if state is JobState.QUEUED:
            publish_after_commit(active, actor.broker, message_for(job))
        if own_session:
            active.commit()
    finally:
        if own_session:
            active.close()
    return job


def _insert_in_one_statement(job: Job, state: JobState) -> None:
    """Insert the job and its "created" event with one statement, in autocommit: one
    round trip instead of three (INSERT, INSERT, COMMIT) and no unit of work (PostgreSQL:
    a data-modifying WITH)."""
    params = {f"job_{key}": getattr(job, key) for key in _job_columns()}
    params.update(event_at=job.created_at, event_state=state.value)
    with db.get_engine().connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            _job_and_event_insert(), params
        )


@functools.cache
def _job_columns() -> tuple[str, ...]:
    jobs: Table = Job.__table__  # type: ignore[assignment]
    return tuple(column.key for column in jobs.columns)


@functools.cache
def _job_and_event_insert() -> Insert:
    """Built once: SQLAlchemy then reuses its compiled form (building the statement with
    the values in it cost more than the round trips it saves)."""
    jobs: Table = Job.__table__  # type: ignore[assignment]
    events: Table = JobEvent.__table__  # type: ignore[assignment]
    values = {
        column.key: bindparam(f"job_{column.key}", type_=column.type) for column in jobs.columns
    }
    inserted = insert(jobs).values(values).returning(jobs.c.id).cte("inserted")
    return insert(events).from_select(
        ["job_id", "seq", "at", "kind", "to_state"],
        select(
            inserted.c.id,
            literal(1),
            bindparam("event_at", type_=events.c.at.type),
            literal("created"),
            bindparam("event_state", type_=events.c.to_state.type),
        ),
    )


def find_by_idempotency_key(tenant: str, key: str) -> Job | None:
    """The job ``tenant`` submitted under idempotency ``key``, if any."""
    with db.session_scope() as session:
        return _find_by_key(session, tenant, key)


def _existing(
    session: Session,
    actor: Actor[Any, Any],
    tenant: str,
    idempotency_key: str | None,
    unique_key: str | None,
) -> Job | None:
    """The job a submission must return instead of creating one, if any."""
    if idempotency_key is not None:
        found = _find_by_key(session, tenant, idempotency_key)
        if found is not None:
            return found
    if unique_key is not None:
        return find_duplicate(session, actor, tenant, unique_key)
    return None


def _find_by_key(session: Session, tenant: str, key: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.tenant == tenant, Job.idempotency_key == key)
    ).one_or_none()


def get_job(job_id: str, *, tenant: str | None = None, session: Session | None = None) -> Job:
    """The job with that id (in ``tenant``, when given); raises :class:`JobNotFound`.

    Another tenant's job is reported missing, never forbidden: that would confirm it exists.
    """
    if session is not None:
        job = session.get(Job, job_id)
    else:
        with db.session_scope() as own:
            job = own.get(Job, job_id)
    if job is None or (tenant is not None and job.tenant != tenant):
        raise JobNotFound(f"no job with id {job_id}")
    return job


def list_jobs(state: JobState | None = None, limit: int = 50) -> list[Job]:
    """The newest jobs first, optionally in one state."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == state.value)
    with db.session_scope() as session:
        return list(session.scalars(query))


def list_events(job_id: str) -> list[JobEvent]:
    """The job's history, oldest first."""
    with db.session_scope() as session:
        return list(
            session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
            )
        )
