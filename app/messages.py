"""Between job rows and Dramatiq messages: one message id, one job."""

from __future__ import annotations

from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy

from app.models import Job
from app.observability.tracing import TRACE_OPTION
from app.timeutil import to_millis

#: A message as built (Message) or as delivered to a worker (MessageProxy).
AnyMessage = Message[Any] | MessageProxy

#: Message option: how many attempts the job had made when this message was sent.
#: A worker starts the job only when the row agrees, so stale duplicates are skipped.
ATTEMPTS_OPTION = "jobstack_attempts"

#: Message option: the message was sent by jobstack (submit or relay), so its row exists.
TRACKED_OPTION = "jobstack_tracked"

#: Message option: a copy sent again later of a message RabbitMQ had redelivered
#: (:class:`app.recording.changes.Deferred`); it is a redelivery still.
REDELIVERED_OPTION = "jobstack_redelivered"


def message_for(job: Job) -> Message[Any]:
    """The message that runs ``job``'s next attempt."""
    options: dict[str, Any] = {TRACKED_OPTION: True, ATTEMPTS_OPTION: job.attempts}
    if job.priority:
        options["broker_priority"] = job.priority
    if job.max_retries is not None:
        options["max_retries"] = job.max_retries
    if job.correlation_id:
        options["correlation_id"] = job.correlation_id
    if job.trace_context:
        options[TRACE_OPTION] = job.trace_context
    return Message(
        queue_name=job.queue,
        actor_name=job.actor,
        args=tuple(job.args),
        kwargs=dict(job.kwargs),
        options=options,
        message_id=job.id,
        message_timestamp=to_millis(job.created_at),
    )


def attempts_made(message: AnyMessage) -> int:
    """The attempts the job had made when ``message`` was sent (0 for a plain send)."""
    return int(message.options.get(ATTEMPTS_OPTION, 0))
