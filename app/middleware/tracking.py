"""Records every message's job and each of its state changes.

First in the middleware list: ``after_*`` hooks run in reverse order, so this
middleware's ``after_process_message`` runs last and sees the decision Retries made (a
retry enqueued, or the message failed), with TimeLimit's timer already disarmed.

The start is committed before the actor runs (it decides whether the message runs at
all). The outcome is handed to the group committer; on jobstack's RabbitMQ broker the
hook returns at once and the message's ack or nack waits for the commit
(:mod:`app.recording.acks`), on any other broker the hook itself waits. Either way the new state
is durable before the message is acked.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage, TimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from app.context import JobContext, current_job_or_none, enter_job
from app.cron import DUPLICATE_TICK_OPTION, tick_key
from app.errors import (
    InvalidTransition,
    JobCancelled,
    PermanentError,
    StaleAttempt,
    TrackingUnavailable,
)
from app.messages import ATTEMPTS_OPTION, REDELIVERED_OPTION, TRACKED_OPTION
from app.models import DEFAULT_TENANT, Job
from app.outbox.publish import published_marks
from app.recording.acks import AfterCommit, hold_ack_until
from app.recording.attempts import insert_job_if_absent
from app.recording.batch import apply_changes
from app.recording.changes import ChangeResult, Deferred, RecordOutcome, StartAttempt, StateChange
from app.recording.claims import NOT_CLAIMED, Decision, take_claim
from app.recording.group_commit import GroupCommitter
from app.states import JobState
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

#: Longest traceback stored on a job, in characters.
MAX_TRACEBACK = 32_000
#: Longest wait at shutdown for outcomes being committed (their acks wait for them).
SHUTDOWN_FLUSH_SECONDS = 30.0
#: Delay before the relay re-publishes a retry that Retries could not enqueue.
LOST_RETRY_DELAY = timedelta(seconds=5)
#: Tries, and the pause between two, to send a put-off message again (a quorum queue
#: refuses publishes for up to half a second while it elects a new leader).
RESEND_ATTEMPTS = 4
RESEND_PAUSE_SECONDS = 0.5


class _ReturnedValueFilter(logging.Filter):
    """Drops Dramatiq's warning about discarded return values: jobstack stores them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned a value that is not None" not in str(record.msg)


class Tracking(Middleware):
    """Gives every message a job row and records queued → running → outcome."""

    def __init__(self, *, start_patience: float) -> None:
        # Per thread: the attempt this worker thread started (every hook of one message
        # runs in the thread that processes it), the eta of the retry Retries enqueued
        # for it, and the ids of plain sends waiting for the broker's confirm.
        self._local = threading.local()
        # Starts and outcomes of all this process's worker threads, committed together.
        self._committer = self._new_committer()
        # Seconds a start waits for the database before the message is retried later.
        self._start_patience = start_patience
        logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ReturnedValueFilter())

    @staticmethod
    def _new_committer() -> GroupCommitter[StateChange, ChangeResult]:
        return GroupCommitter(apply_changes, name="jobstack-group-commit")

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
        # The moment it is sent: published_at, once the broker has confirmed it.
        self._pending_sends()[message.message_id] = utcnow()

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # Dramatiq's enqueue returns here once RabbitMQ confirmed the message.
        sent_at = self._pending_sends().pop(message.message_id, None)
        if sent_at is not None:
            published_marks.write_now({message.message_id: sent_at})

    def _pending_sends(self) -> dict[str, datetime]:
        pending: dict[str, datetime] | None = getattr(self._local, "sends", None)
        if pending is None:
            pending = self._local.sends = {}
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
        # A committer thread does not survive a fork; the worker process gets its own.
        self._committer = self._new_committer()

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # On jobstack's RabbitMQ broker, consumers claim starts as messages arrive.
        if hasattr(broker, "claim_starts"):
            setattr(broker, "worker_threads", worker.worker_threads)  # noqa: B010
            setattr(broker, "claim_starts", self._claim_start)  # noqa: B010

    def _claim_start(self, message: MessageProxy, on_done: Any) -> None:
        """Start ``message``'s job in the next group commit; ``on_done`` gets the decision."""
        self._committer.submit(_start_of(message), on_done, give_up_after=self._start_patience)

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # Worker threads still run: let them take every job already claimed (shown
        # running), instead of leaving those for a redelivery that counts as a crash.
        finish = getattr(broker, "finish_claimed", None)
        if finish is not None and not finish(SHUTDOWN_FLUSH_SECONDS):
            logger.warning("Claimed jobs left untaken at shutdown; their messages return.")

    def before_consumer_thread_shutdown(self, broker: Broker, thread: Any) -> None:
        # Workers have stopped; outcomes still being committed release their acks now,
        # before Dramatiq closes the consumers' connections.
        if not self._committer.flush(timeout=SHUTDOWN_FLUSH_SECONDS):
            logger.warning("Outcomes still uncommitted at shutdown; their messages return.")

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if hasattr(broker, "claim_starts"):
            setattr(broker, "claim_starts", None)  # noqa: B010 - consumers made later start jobs themselves
        self.close()

    def close(self) -> None:
        """Stop the group committer's thread, which gives back its database connection.
        A worker's shutdown does this; code that runs the hooks without a worker must."""
        self._committer.stop()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        decision = take_claim(message)
        if decision is NOT_CLAIMED:
            decision = self._start_now(message)
        if isinstance(decision, Exception):
            _keep_redelivered(message)
            raise TrackingUnavailable(
                f"could not start job {message.message_id}: {decision}"
            ) from decision
        if decision is None:
            raise SkipMessage(f"message {message.message_id} must not run")
        if isinstance(decision, Deferred):
            _send_again_later(broker, message, decision.seconds)
            raise SkipMessage(f"message {message.message_id} sent again for later")
        assert isinstance(decision, int)
        attempt = decision
        self._local.running = (message.message_id, attempt)
        self._local.retry_eta = None
        self._local.started = time.monotonic()
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
        # One INFO line per job, at its outcome (as Celery's "succeeded in"): a second
        # one here cost a tenth of the drain rate, and the start is in the job's events.
        logger.debug(
            "Job %s (%s) started, attempt %d.", message.message_id, message.actor_name, attempt
        )

    def _start_now(self, message: MessageProxy) -> Decision:
        """Start the job of a message nobody claimed at delivery, waiting for the commit."""
        try:
            return self._committer.run(_start_of(message), give_up_after=self._start_patience)
        except Exception as error:
            return error

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
        change = RecordOutcome(message.message_id, attempt, to_state, values, {"reason": "skipped"})
        self._record(broker, message, change)

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
            values = _retry(exception, message, eta)
            # The next attempt overwrites the job's error: its event keeps this one's.
            data = {key: values[key] for key in ("error_type", "error_message", "error_traceback")}
            to_state = JobState.RETRYING

        # Logged while the job's context is still set, so the line carries its ids.
        logger.info(
            "Job %s (%s) %s after attempt %d in %.3f s.",
            message.message_id,
            message.actor_name,
            to_state.value,
            attempt,
            time.monotonic() - self._local.started,
        )
        self._record(
            broker, message, RecordOutcome(message.message_id, attempt, to_state, values, data)
        )
        enter_job(None)

    def _record(self, broker: Broker, message: MessageProxy, change: RecordOutcome) -> None:
        """Commit the outcome ``change`` before ``message`` is acked or nacked.

        The database is waited for however long it takes: acking before the outcome is
        stored would lose it. A worker stopped meanwhile leaves the message unacked, so
        RabbitMQ delivers it again.
        """
        if getattr(broker, "acks_wait_for_commits", False):
            gate = AfterCommit()
            hold_ack_until(message, gate)
            self._committer.submit(
                change,
                functools.partial(_outcome_committed, change.job_id, gate),
                give_up_after=None,
            )
            return
        try:
            self._committer.run(change, give_up_after=None)
        except (StaleAttempt, InvalidTransition) as error:
            logger.warning("Outcome of job %s not recorded: %s", change.job_id, error)


def _start_of(message: MessageProxy) -> StartAttempt:
    redelivered = getattr(message, "redelivered", False) or message.options.get(
        REDELIVERED_OPTION, False
    )
    return StartAttempt(message, redelivered=bool(redelivered))


def _send_again_later(broker: Broker, message: MessageProxy, seconds: float) -> None:
    """A copy of ``message``, still a redelivery, through the delay queue; the original is
    acked only once RabbitMQ confirmed the copy (enqueue waits for it), so a failure here
    leaves the message unacked, to come back."""
    options = {**message.options, REDELIVERED_OPTION: True, TRACKED_OPTION: True}
    for attempt in range(1, RESEND_ATTEMPTS + 1):
        try:
            broker.enqueue(message.copy(options=options), delay=int(seconds * 1000))
            return
        except Exception as error:
            # A quorum queue electing a new leader refuses publishes for a moment.
            if attempt < RESEND_ATTEMPTS:
                time.sleep(RESEND_PAUSE_SECONDS)
                continue
            # Never run it instead: its job is running elsewhere. Retries sends it again.
            _keep_redelivered(message)
            raise TrackingUnavailable(
                f"could not send job {message.message_id} again for later: {error}"
            ) from error


def _keep_redelivered(message: MessageProxy) -> None:
    """Mark a redelivered message so that the copy Retries sends of it, when its start
    could not be decided now, is taken for a redelivery too (not for a stray duplicate of
    a running job, which is skipped)."""
    if getattr(message, "redelivered", False):
        message.options[REDELIVERED_OPTION] = True


def _outcome_committed(job_id: str, gate: AfterCommit, outcome: object) -> None:
    """On the committer's thread: release the message's ack, unless nothing was stored."""
    if isinstance(outcome, (StaleAttempt, InvalidTransition)):
        # The job moved on without this attempt (cancelled, or redelivered elsewhere):
        # nothing to keep the message for.
        logger.warning("Outcome of job %s not recorded: %s", job_id, outcome)
    elif isinstance(outcome, Exception):
        # Never ack what is not stored: the message stays unacked and returns to the
        # queue when this worker's connection closes (a poison message is dead-lettered
        # after its third delivery).
        logger.error("Outcome of job %s could not be stored.", job_id, exc_info=outcome)
        return
    gate.open()


def _job_with_key(session: Session, key: str) -> str | None:
    return session.scalar(
        select(Job.id).where(Job.tenant == DEFAULT_TENANT, Job.idempotency_key == key)
    )


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
