"""The worker's Sentry events: one per job, when it fails for good.

Sentry's Dramatiq middleware is first in the list: it opens a scope for each message and,
in its ``after_process_message`` (run last, as ``after_*`` hooks run in reverse), captures
the exception of every failed attempt. This middleware goes right after Tracking, so its
``after_*`` hooks run after Retries has decided and just before Sentry's:

- an attempt that will be retried (or a cancelled job) has its event dropped; the failure
  travels with the retry message and becomes a breadcrumb of the attempts after it;
- a final failure (retries exhausted, PermanentError, a time limit on the last attempt)
  keeps Sentry's event, tagged with the job's ids;
- a message failed without running (poison, decided when Tracking starts it; or failed
  and skipped by a later middleware such as AgeLimit) has no exception: this middleware
  sends a message event with the same tags.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sentry_sdk
from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.errors import Retry
from dramatiq.middleware import Middleware
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app import db
from app.messages import attempts_made
from app.models import Job

if TYPE_CHECKING:
    from sentry_sdk._types import Event, Hint

logger = logging.getLogger(__name__)

#: Message option: the failed attempts before this message, as breadcrumbs to replay.
BREADCRUMBS_OPTION = "jobstack_error_breadcrumbs"
#: Breadcrumbs a message carries at most (the latest ones), and the length of each text.
MAX_BREADCRUMBS = 10
MAX_BREADCRUMB_TEXT = 300


#: Longest wait at a worker's shutdown for events still being sent.
SHUTDOWN_FLUSH_SECONDS = 2.0


class JobErrorReports(Middleware):
    """Tags Sentry's scope with the job's ids and lets one event through per failed job."""

    def __init__(self) -> None:
        # The message this worker thread processes, to know its retry when it is enqueued.
        self._local = threading.local()

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if delay is None or getattr(self._local, "running", None) != message.message_id:
            return
        # Retries enqueues the retry of the failing message from Dramatiq's except
        # block, before this middleware's after hook: the error is still being handled.
        error = sys.exc_info()[1]
        if error is None:
            return
        text = f"Attempt {attempts_made(message)} failed with {type(error).__name__}: {error}"
        crumb = {"at": time.time(), "message": text[:MAX_BREADCRUMB_TEXT]}
        # The options are a copy of the failed message's: a new list, not an append.
        earlier = list(message.options.get(BREADCRUMBS_OPTION, ()))
        message.options[BREADCRUMBS_OPTION] = [*earlier, crumb][-MAX_BREADCRUMBS:]

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        # Runs after Tracking has started the attempt (and inside Sentry's new scope).
        self._local.running = message.message_id
        for crumb in message.options.get(BREADCRUMBS_OPTION, ()):
            sentry_sdk.add_breadcrumb(
                category="jobstack.retry",
                level="warning",
                message=crumb["message"],
                timestamp=datetime.fromtimestamp(crumb["at"], UTC),
            )
        sentry_sdk.set_tags(job_tags(message, attempts_made(message)))

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._local.running = None
        if exception is None:
            return
        if not message.failed:
            # Retried or cancelled: the event Sentry's middleware makes next is dropped.
            sentry_sdk.get_isolation_scope().add_event_processor(_dropping(exception))
            return
        sentry_sdk.set_tags({**job_tags(message, attempts_made(message)), **final_tags(message)})
        if isinstance(exception, Retry):
            # Sentry's middleware reports no Retry; exhausted, it is a failure like others.
            sentry_sdk.capture_exception(exception)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # A forked worker process ends with os._exit: atexit, which would flush Sentry's
        # queue, never runs there. An event captured just before a stop would be lost.
        import sentry_sdk

        sentry_sdk.flush(timeout=SHUTDOWN_FLUSH_SECONDS)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        started = getattr(self._local, "running", None) == message.message_id
        self._local.running = None
        if not message.failed:
            return
        # Failed before this middleware's start: by Tracking, which does so only to a
        # poison message; after it: by a later middleware (AgeLimit).
        why = "failed by worker middleware" if started else "poison: it killed its workers"
        sentry_sdk.set_tags({**job_tags(message, attempts_made(message)), **final_tags(message)})
        sentry_sdk.capture_message(
            f"Job {message.message_id} ({message.actor_name}) failed without running ({why}).",
            level="error",
        )


def job_tags(message: MessageProxy, attempt: int) -> dict[str, str]:
    """The tags every event of the job's attempt carries (from the message: no query)."""
    tags = {
        "job_id": message.message_id,
        "actor": message.actor_name,
        "queue": q_name(message.queue_name),
        "attempt": str(attempt),
    }
    correlation_id = message.options.get("correlation_id")
    if correlation_id:
        tags["correlation_id"] = str(correlation_id)
    trace_id = current_trace_id()
    if trace_id:
        tags["trace_id"] = trace_id
    return tags


def final_tags(message: MessageProxy) -> dict[str, str]:
    """The tags read from the job's row for the one event that is sent (one query).

    Its message carries no tenant, and a poison message names the attempts made before
    it was first sent, not the ones its redeliveries started.
    """
    try:
        with db.session_scope() as session:
            row = session.execute(
                select(Job.tenant, Job.attempts).where(Job.id == message.message_id)
            ).one_or_none()
    except SQLAlchemyError:
        logger.warning("No tenant for the error report of job %s.", message.message_id)
        return {}
    return {"tenant": row.tenant, "attempt": str(row.attempts)} if row else {}


def current_trace_id() -> str | None:
    """The OpenTelemetry trace id of the current span, when tracing is on."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def _dropping(exception: BaseException) -> Callable[[Event, Hint], Event | None]:
    """An event processor that drops the events of ``exception``."""

    def drop(event: Event, hint: Hint) -> Event | None:
        exc_info = hint.get("exc_info")
        return None if exc_info and exc_info[1] is exception else event

    return drop
