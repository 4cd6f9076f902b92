"""The spans of a job's messages: ``create`` and ``send`` where they are published, and
one CONSUMER span ``process <queue>`` per attempt in a worker.

Every ``send`` and ``process`` span's parent is the job's creation context, carried in
the message (:data:`~app.observability.tracing.TRACE_OPTION`), so a job's messages make
one trace whichever way they were published: at submission, by the relay (late or
when due), as a retry (Dramatiq sends it twice, to ``Q.DQ`` then ``Q``: both copies keep
the option, and nothing here overwrites it), as a re-drive or as a manual retry.

This middleware goes BEFORE Tracking in the list: its ``before_enqueue`` gives a plain
``actor.send()`` its creation context before Tracking writes the message's row with it,
and its ``after_process_message`` runs after everyone else's (``after_*`` hooks run in
reverse), when Retries has decided whether the attempt failed for good.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode

from app.config import Settings
from app.messages import ATTEMPTS_OPTION
from app.observability import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

#: A ``send`` span whose confirm never came (the publish failed) is ended after this long.
SEND_SPAN_TIMEOUT = 60.0


def worker_middleware(settings: Settings) -> list[Middleware]:
    """The job tracing middleware when ``OTEL_*`` asks for traces; else nothing."""
    return [JobTracing()] if tracing.ENABLED else []


class JobTracing(Middleware):
    """``create``/``send`` spans for published messages, a ``process`` span per attempt."""

    def __init__(self) -> None:
        # Per thread: the attempt's span and the context token that made it current,
        # and the send spans waiting for their broker's confirm (message id -> span).
        self._local = threading.local()

    # Process lifecycle ----------------------------------------------------------------

    def after_process_boot(self, broker: Broker) -> None:
        # Each worker process has its own provider (and exporter thread), after the fork.
        tracing.start_tracing("worker")

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        tracing.stop_tracing()

    # Producer side ----------------------------------------------------------------------

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        tracing.start_tracing(tracing.process_role())
        queue = q_name(message.queue_name)
        if not message.options.get(tracing.TRACE_OPTION):
            # A message nobody created a job for (actor.send(), a cron tick): it is
            # created now; Tracking, next, stores the context with its row.
            tracing.start_creation(message.options, queue, message.message_id, message.actor_name)
        span = tracing.start_message_span(
            "send",
            "PRODUCER",
            queue,
            message.message_id,
            message.actor_name,
            message.options.get("correlation_id"),
            message.options[tracing.TRACE_OPTION],
        )
        if delay is not None or message.queue_name != queue:
            span.set_attribute("jobstack.delayed", True)
        sends = self._sends()
        self._end_forgotten(sends)
        earlier = sends.pop(message.message_id, None)
        if earlier is not None:
            # Dramatiq's enqueue tries again after a lost connection, emitting
            # before_enqueue once per try: the failed try's span ends here.
            earlier[1].set_status(Status(StatusCode.ERROR, "publish failed; tried again"))
            earlier[1].end()
        sends[message.message_id] = (time.monotonic(), span)

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # Called once the broker confirmed the message.
        waiting = self._sends().pop(message.message_id, None)
        if waiting is not None:
            waiting[1].end()

    def _sends(self) -> dict[str, tuple[float, Span]]:
        sends: dict[str, tuple[float, Span]] | None = getattr(self._local, "sends", None)
        if sends is None:
            sends = self._local.sends = {}
        return sends

    @staticmethod
    def _end_forgotten(sends: dict[str, tuple[float, Span]]) -> None:
        """End the send spans of publishes that failed (no after_enqueue came)."""
        now = time.monotonic()
        for message_id, (started, span) in list(sends.items()):
            if now - started > SEND_SPAN_TIMEOUT:
                span.set_status(Status(StatusCode.ERROR, "not confirmed by the broker"))
                span.end()
                del sends[message_id]

    # Worker side ------------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        span = tracing.start_message_span(
            "process",
            "CONSUMER",
            q_name(message.queue_name),
            message.message_id,
            message.actor_name,
            message.options.get("correlation_id"),
            message.options.get(tracing.TRACE_OPTION),
        )
        # Current for the rest of the attempt: Tracking's start, the actor's own spans
        # (SQL, HTTP) and the outcome's hooks all nest under it.
        token = context.attach(trace.set_span_in_context(span))
        # Tracking, next, replaces the attempts the message was sent after by the number
        # of the attempt it starts: a value unchanged at the end means none started.
        self._local.attempt = (span, token, message.options.get(ATTEMPTS_OPTION))

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._end_attempt(message, skipped=True)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._end_attempt(message, exception=exception)

    def _end_attempt(
        self,
        message: MessageProxy,
        *,
        exception: BaseException | None = None,
        skipped: bool = False,
    ) -> None:
        attempt: tuple[Span, object, Any] | None = getattr(self._local, "attempt", None)
        if attempt is None:
            return
        self._local.attempt = None
        span, token, sent_after = attempt
        number = message.options.get(ATTEMPTS_OPTION)
        if skipped:
            span.set_attribute("jobstack.skipped", True)
        elif number is not None and number != sent_after:
            # Set by Tracking once the start was committed: the attempt this span ran.
            span.set_attribute("jobstack.attempt", int(number))
        if exception is not None:
            span.record_exception(exception)
            span.set_attribute("error.type", type(exception).__qualname__)
            span.set_attribute("jobstack.failed_for_good", bool(message.failed))
            span.set_status(Status(StatusCode.ERROR, str(exception)[:200]))
        span.end()
        context.detach(token)  # type: ignore[arg-type]
