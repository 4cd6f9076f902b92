"""Records every message's job and each of its state changes.

First in the middleware list: ``after_*`` hooks run in reverse order, so this
middleware's ``after_process_message`` runs last and sees the decision Retries made (a
retry enqueued, or the message failed), with TimeLimit's timer already disarmed.
Dramatiq acks or nacks a message only after every ``after_process_message`` hook has
returned, and the hook here returns only once the new state is committed: the state is
durable before the message is acked.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq import Broker, Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage, TimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import db
from app.config import load_settings
from app.context import JobContext, current_job_or_none, enter_job
from app.errors import (
    InvalidTransition,
    JobCancelled,
    PermanentError,
    StaleAttempt,
    TrackingUnavailable,
)
from app.messages import ATTEMPTS_OPTION, TRACKED_OPTION, AnyMessage, attempts_made
from app.models import DEFAULT_TENANT, Job, JobEvent
from app.outbox import mark_published
from app.retrying_db import run_in_transaction
from app.states import TERMINAL_STATES, JobState
from app.ticks import DUPLICATE_TICK_OPTION, tick_key
from app.timeutil import utcnow
from app.transitions import transition
from app.webhooks import enqueue_delivery
from app.worker_identity import worker_id

logger = logging.getLogger(__name__)

#: Longest traceback stored on a job, in characters.
MAX_TRACEBACK = 32_000
#: Delay before the relay re-publishes a retry that Retries could not enqueue.
LOST_RETRY_DELAY = timedelta(seconds=5)


class _ReturnedValueFilter(logging.Filter):
    """Drops Dramatiq's warning about discarded return values: jobstack stores them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned a value that is not None" not in str(record.msg)


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


class Tracking(Middleware):
    """Gives every message a job row and records queued → running → outcome."""

    def __init__(self) -> None:
        # Per thread: the attempt this worker thread started (every hook of one message
        # runs in the thread that processes it), the eta of the retry Retries enqueued
        # for it, and the ids of plain sends waiting for the broker's confirm.
        self._local = threading.local()
        logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ReturnedValueFilter())

    # Producer side ------------------------------------------------------------------

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if delay is not None and self._running_id() == message.message_id:
            self._local.retry_eta = message.options["eta"]
            return
        if message.options.get(TRACKED_OPTION):
            return
        # A plain actor.send(): the row is written before the message exists, and
        # marked published once the broker confirmed it.
        eta = message.options.get("eta")
        run_at = datetime.fromtimestamp(eta / 1000, UTC) if eta else None
        key = tick_key(message)
        try:
            with db.session_scope() as session:
                created = insert_job_if_absent(session, message, run_at=run_at, idempotency_key=key)
                owner = None if created or key is None else _job_with_key(session, key)
        except Exception:
            logger.warning(
                "Could not record job %s; the worker will create its row.",
                message.message_id,
                exc_info=True,
            )
            return
        message.options[TRACKED_OPTION] = True
        if owner is not None and owner != message.message_id:
            # Another scheduler sent this tick first: this message runs nothing.
            logger.info(
                "Tick %s already has job %s; %s is a duplicate.", key, owner, message.message_id
            )
            message.options[DUPLICATE_TICK_OPTION] = owner
            return
        self._pending_sends().add(message.message_id)

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        pending = self._pending_sends()
        if message.message_id in pending:
            pending.discard(message.message_id)
            mark_published([message.message_id])

    def _pending_sends(self) -> set[str]:
        pending: set[str] | None = getattr(self._local, "sends", None)
        if pending is None:
            pending = self._local.sends = set()
        return pending

    def _running_id(self) -> str | None:
        running: tuple[str, int] | None = getattr(self._local, "running", None)
        return running[0] if running else None

    def _finish(self) -> tuple[int | None, int | None]:
        """Forget this thread's attempt; returns it and its retry's eta."""
        running: tuple[str, int] | None = getattr(self._local, "running", None)
        eta: int | None = getattr(self._local, "retry_eta", None)
        self._local.running = self._local.retry_eta = None
        return (running[1] if running else None), eta

    # Worker side --------------------------------------------------------------------

    def after_process_boot(self, broker: Broker) -> None:
        db.dispose_after_fork()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        redelivered = bool(getattr(message, "redelivered", False))
        try:
            attempt = run_in_transaction(
                lambda session: self._start(session, message, redelivered),
                give_up_after=load_settings().db_retry_seconds,
            )
        except Exception as error:
            raise TrackingUnavailable(
                f"could not start job {message.message_id}: {error}"
            ) from error
        if attempt is None:
            raise SkipMessage(f"message {message.message_id} must not run")
        self._local.running = (message.message_id, attempt)
        self._local.retry_eta = None
        # Retry copies of this message carry the attempt count they follow.
        message.options[ATTEMPTS_OPTION] = attempt
        message.options[TRACKED_OPTION] = True
        enter_job(
            JobContext(
                id=message.message_id,
                attempt=attempt,
                correlation_id=message.options.get("correlation_id"),
            )
        )
        logger.info(
            "Job %s (%s) started, attempt %d.", message.message_id, message.actor_name, attempt
        )

    def _start(self, session: Session, message: MessageProxy, redelivered: bool) -> int | None:
        """Start the job's next attempt; None when this message must not run (it is skipped
        after the transaction commits, so a cancellation recorded here stands)."""
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
            # it died before acking, and RabbitMQ gave it to us.
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
            values={"started_at": utcnow(), "worker_id": me, "finished_at": None},
            kind=kind,
            data={
                "worker_id": me,
                "redelivered": redelivered,
                "sent_after": sent_after,
                "deaths": deaths,
            },
        )
        return done.attempts

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        # A middleware after this one skipped a message this one had started (AgeLimit
        # for a message past its max_age, periodiq for a stale tick).
        attempt, _eta = self._finish()
        enter_job(None)
        if attempt is None:
            return  # Skipped by this middleware: it started nothing.
        to_state = JobState.FAILED if message.failed else JobState.CANCELLED
        values: dict[str, Any] = {"finished_at": utcnow()}
        if message.failed:
            values.update(error_type="Skipped", error_message="skipped by worker middleware")
        self._record(message.message_id, attempt, to_state, values, {"reason": "skipped"})

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt, eta = self._finish()
        if attempt is None:
            enter_job(None)
            return  # The job never started here (skipped, or its start failed).
        if exception is None:
            to_state, values, data = JobState.SUCCEEDED, _success(result), None
        elif isinstance(exception, JobCancelled):
            job = current_job_or_none()
            forced = bool(job and job.cancel_forced)
            to_state = JobState.CANCELLED
            values = {**_error_fields(exception), "finished_at": utcnow()}
            data = {"reason": "forced" if forced else "cooperative"}
        elif message.failed:
            to_state, values, data = JobState.FAILED, _failure(exception), _failure_data(exception)
        else:
            to_state, values, data = JobState.RETRYING, _retry(exception, message, eta), None

        # Logged while the job's context is still set, so the line carries its ids.
        logger.info("Job %s %s after attempt %d.", message.message_id, to_state.value, attempt)
        self._record(message.message_id, attempt, to_state, values, data)
        enter_job(None)

    def _record(
        self,
        job_id: str,
        attempt: int,
        to_state: JobState,
        values: dict[str, Any],
        data: dict[str, Any] | None,
    ) -> None:
        """Commit the outcome of ``attempt``."""

        def record(session: Session) -> None:
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

        try:
            # Waits for the database however long it takes: acking before the outcome
            # is stored would lose it. A worker stopped meanwhile leaves the message
            # unacked, so RabbitMQ delivers it again.
            run_in_transaction(record, give_up_after=None)
        except (StaleAttempt, InvalidTransition) as error:
            logger.warning("Outcome of job %s not recorded: %s", job_id, error)


START_KINDS = ("started", "redelivered", "superseded")


def _job_with_key(session: Session, key: str) -> str | None:
    return session.scalar(
        select(Job.id).where(Job.tenant == DEFAULT_TENANT, Job.idempotency_key == key)
    )


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


def _error_fields(exception: BaseException) -> dict[str, Any]:
    text = "".join(traceback.format_exception(exception))
    return {
        "error_type": type(exception).__name__,
        "error_message": str(exception) or type(exception).__name__,
        "error_traceback": text[-MAX_TRACEBACK:],
    }


def _success(result: Any) -> dict[str, Any]:
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        logger.warning("Result of type %s is not JSON; storing its repr.", type(result).__name__)
        result = {"unserializable_result": repr(result)[:1000]}
    return {
        "result": result,
        "progress": 100,
        "finished_at": utcnow(),
        "error_type": None,
        "error_message": None,
        "error_traceback": None,
    }


def _failure(exception: BaseException) -> dict[str, Any]:
    return {**_error_fields(exception), "finished_at": utcnow()}


def _failure_data(exception: BaseException) -> dict[str, Any]:
    if isinstance(exception, PermanentError):
        reason = "permanent"
    elif isinstance(exception, TimeLimitExceeded):
        reason = "timeout"
    else:
        reason = "retries_exhausted"
    return {"reason": reason, "dead_lettered": True, "error_type": type(exception).__name__}


def _retry(exception: BaseException, message: MessageProxy, eta: int | None) -> dict[str, Any]:
    if eta is not None:
        run_at, published_at = datetime.fromtimestamp(eta / 1000, UTC), utcnow()
    else:
        # Retries could not enqueue the retry (broker down); the relay publishes it.
        logger.warning(
            "Retry of job %s was not enqueued; the relay will publish it.", message.message_id
        )
        run_at, published_at = utcnow() + LOST_RETRY_DELAY, None
    return {**_error_fields(exception), "run_at": run_at, "published_at": published_at}
