"""Starting a job's attempt and recording its outcome: one job at a time, in a transaction.

The general path, which every case goes through: duplicates, redeliveries, cancellations,
poison messages, rows nobody created yet. The common cases of many jobs at once take the
batch path instead, which applies the same rule in two other places: multi-row statements
in :mod:`app.recording.batch` (SQLite) and the server-side function
``jobstack_apply_changes`` of migration 0008 (PostgreSQL). A change to what a start or an
outcome writes is made in all three; ``tests/unit/test_recording_rules.py`` fails when
they disagree.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq.broker import MessageProxy
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.config import load_settings
from app.cron import DUPLICATE_TICK_OPTION
from app.messages import AnyMessage, attempts_made
from app.models import DEFAULT_TENANT, Job, JobEvent
from app.models import Worker as WorkerRow
from app.observability.tracing import TRACE_OPTION
from app.recording.changes import Deferred
from app.states import TERMINAL_STATES, JobState
from app.timeutil import utcnow
from app.transitions import transition
from app.webhooks import enqueue_delivery
from app.workers import process_gone, worker_id

logger = logging.getLogger(__name__)


def insert_job_if_absent(
    session: Session,
    message: AnyMessage,
    *,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> bool:
    """Create the row of a message nobody recorded yet; returns whether it was created
    (not when its id, or its idempotency key, is taken)."""
    now = utcnow()
    values = {
        "id": message.message_id,
        "actor": message.actor_name,
        "queue": message.queue_name.removesuffix(".DQ"),
        "args": list(message.args),
        "kwargs": dict(message.kwargs),
        "state": JobState.QUEUED.value,
        "priority": int(message.options.get("broker_priority") or 0),
        "attempts": 0,
        "max_retries": message.options.get("max_retries"),
        "progress": 0,
        "tenant": DEFAULT_TENANT,
        "created_at": datetime.fromtimestamp(message.message_timestamp / 1000, UTC),
        "updated_at": now,
        "run_at": run_at,
        "idempotency_key": idempotency_key,
        "last_event_seq": 1,
        "trace_context": message.options.get(TRACE_OPTION),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    created = session.execute(
        dialect.insert(Job).values(values).on_conflict_do_nothing().returning(Job.id)
    ).scalar_one_or_none()
    if created is None:
        return False
    session.add(
        JobEvent(job_id=message.message_id, seq=1, at=now, kind="created", to_state="queued")
    )
    return True


def start_attempt(
    session: Session, message: MessageProxy, redelivered: bool
) -> int | Deferred | None:
    """Start the job's next attempt; None when this message must not run (it is skipped
    after the transaction commits, so a cancellation recorded here stands); Deferred when
    the worker running the current attempt is alive (see :func:`_live_holder`)."""
    job_id = message.message_id
    if message.options.get(DUPLICATE_TICK_OPTION):
        logger.info(
            "Skipping %s: a duplicate of cron tick job %s.",
            job_id,
            message.options[DUPLICATE_TICK_OPTION],
        )
        return None
    row = session.execute(
        select(Job.state, Job.attempts, Job.cancel_requested_at).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        insert_job_if_absent(session, message)
        state, attempts, cancel_requested = JobState.QUEUED, 0, False
    else:
        state, attempts = JobState(row.state), row.attempts
        cancel_requested = row.cancel_requested_at is not None
    sent_after = attempts_made(message)

    if cancel_requested and state in (JobState.QUEUED, JobState.RETRYING):
        # Cancelled while it ran, and it went on to retry before stopping.
        transition(
            session,
            job_id,
            JobState.CANCELLED,
            only_from=frozenset({state}),
            attempt=attempts,
            values={"finished_at": utcnow()},
            kind="cancelled",
            data={"reason": "requested"},
        )
        return None

    deaths = 0
    if state in (JobState.QUEUED, JobState.RETRYING) and sent_after == attempts:
        kind = "started"
    elif state is JobState.RUNNING and sent_after == attempts:
        # The retry of the current attempt arrived before that attempt's outcome was
        # committed (a backoff shorter than a commit): start it all the same.
        kind = "superseded"
    elif (
        state is JobState.RUNNING
        and redelivered
        and _started_by(session, job_id, attempts) == sent_after
    ):
        # The message that started the current attempt came back: the worker running
        # it died before acking, or lost its connection to RabbitMQ and runs it still.
        holder = _live_holder(session, job_id)
        if holder is not None:
            wait = max(MIN_DEFER_SECONDS, load_settings().heartbeat_interval)
            logger.info(
                "Job %s came back from RabbitMQ while worker %s still runs it; "
                "looking again in %.1f s.",
                job_id,
                holder,
                wait,
            )
            return Deferred(wait)
        deaths = _deaths(session, job_id) + 1
        if deaths >= load_settings().poison_deaths:
            _fail_as_poison(session, job_id, attempts, deaths, message)
            return None
        kind = "redelivered"
    else:
        logger.info(
            "Skipping message %s: job is %s after %d attempt(s); message was sent after %d.",
            job_id,
            state.value,
            attempts,
            sent_after,
        )
        return None

    me = worker_id()
    done = transition(
        session,
        job_id,
        JobState.RUNNING,
        only_from=frozenset({state}),
        attempt=attempts,
        new_attempt=True,
        values=start_values(utcnow(), me),
        kind=kind,
        data=start_data(me, redelivered=redelivered, sent_after=sent_after, deaths=deaths),
    )
    return done.attempts


def start_values(now: datetime, worker: str) -> dict[str, Any]:
    """The columns a start sets besides those every transition sets (state, attempts,
    updated_at, last_event_seq); the batch path and migration 0008's function set the same."""
    return {"started_at": now, "worker_id": worker, "finished_at": None}


def start_data(worker: str, *, redelivered: bool, sent_after: int, deaths: int) -> dict[str, Any]:
    """The data of a start's event (``started``, ``redelivered`` or ``superseded``)."""
    return {
        "worker_id": worker,
        "redelivered": redelivered,
        "sent_after": sent_after,
        "deaths": deaths,
    }


def record_outcome(
    session: Session,
    job_id: str,
    attempt: int,
    to_state: JobState,
    values: dict[str, Any],
    data: dict[str, Any] | None,
) -> None:
    """Move the job from running ``attempt`` to ``to_state`` (and queue its webhook)."""
    transition(
        session,
        job_id,
        to_state,
        only_from=frozenset({JobState.RUNNING}),
        attempt=attempt,
        values=values,
        kind=to_state.value,
        data=data,
    )
    if to_state in TERMINAL_STATES:
        enqueue_delivery(session, job_id)


START_KINDS = ("started", "redelivered", "superseded")


def _last_start(session: Session, job_id: str) -> dict[str, Any]:
    """The data of the event that started the job's current attempt."""
    data = session.scalar(
        select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.kind.in_(START_KINDS))
        .order_by(JobEvent.seq.desc())
        .limit(1)
    )
    return data or {}


def _started_by(session: Session, job_id: str, attempts: int) -> int:
    """Which message started the current attempt, by the attempts it was sent after.

    A job started without that record is taken to have been started by the message
    sent for this attempt.
    """
    value = _last_start(session, job_id).get("sent_after")
    return attempts - 1 if value is None else int(value)


#: Seconds at least between two looks at a job whose message came back while its worker
#: still runs it.
MIN_DEFER_SECONDS = 1.0
#: A worker silent for this many heartbeat intervals is taken for dead.
SILENT_BEATS = 3
#: Seconds past a job's time limit by which its attempt has surely ended.
TIME_LIMIT_MARGIN = 60.0


def _live_holder(session: Session, job_id: str) -> str | None:
    """The worker that started the job's current attempt, if it may still be running it.

    A worker whose connection to RabbitMQ was lost (a broker node died, a network cut)
    runs on: its messages go to other workers, which must not start the job again
    meanwhile. It counts as running the job while its heartbeats go on and either list
    the job or are not a heartbeat newer than the start (a job claimed, not yet taken by
    a thread), and never past the job's longest time limit. A worker that really died
    falls silent: after SILENT_BEATS heartbeat intervals its job is started again, or at
    once when it ran on this machine and its process is gone (a SIGKILL, the OOM killer).
    """
    row = session.execute(select(Job.worker_id, Job.started_at).where(Job.id == job_id)).one()
    if row.worker_id is None or row.started_at is None:
        return None
    settings = load_settings()
    now = utcnow()
    if now - row.started_at > timedelta(seconds=settings.max_time_limit + TIME_LIMIT_MARGIN):
        return None
    worker = session.get(WorkerRow, row.worker_id)
    if worker is None or worker.stopped_at is not None:
        return None
    if worker.process_key is not None and process_gone(worker.process_key):
        return None
    if now - worker.last_seen > timedelta(seconds=SILENT_BEATS * settings.heartbeat_interval):
        return None
    recent_start = worker.last_seen < row.started_at + timedelta(
        seconds=settings.heartbeat_interval
    )
    if job_id in (worker.running_job_ids or []) or recent_start:
        return worker.id
    return None


def _deaths(session: Session, job_id: str) -> int:
    """How many workers have died running the current message of this job."""
    return int(_last_start(session, job_id).get("deaths", 0))


def _fail_as_poison(
    session: Session, job_id: str, attempts: int, deaths: int, message: MessageProxy
) -> None:
    """Fail a job whose message keeps killing workers, and dead-letter the message."""
    logger.error("Job %s killed %d workers; dead-lettering it as poison.", job_id, deaths)
    transition(
        session,
        job_id,
        JobState.FAILED,
        only_from=frozenset({JobState.RUNNING}),
        attempt=attempts,
        values={
            "finished_at": utcnow(),
            "error_type": "PoisonMessage",
            "error_message": f"the worker running it died {deaths} times",
            "error_traceback": None,
        },
        kind=JobState.FAILED.value,
        data={"reason": "poison", "dead_lettered": True, "deaths": deaths},
    )
    enqueue_delivery(session, job_id)
    # A failed message is nacked, and RabbitMQ moves it to the dead-letter queue.
    message.fail()
