"""Worker metrics for Prometheus, merged across a host's worker processes.

:class:`JobMetrics` goes right after Tracking: its ``after_*`` hooks run after Retries
decided (``after_*`` hooks run in reverse order), so an attempt's outcome is known there.
Each worker process writes its values to the host's shared folder
(:mod:`.metrics_dir`), and one server per ``dramatiq`` command serves their sum
(:mod:`.metrics_server`). Dramatiq's own Prometheus middleware is not used: it counts a
retry twice (Q.DQ, then Q) and its delayed-messages gauge goes below zero.

The queue wait of an attempt runs from the moment its message became ready to run to its
start (this middleware's ``before_process_message``, once Tracking committed the start).
That moment travels with the message, as the option :data:`READY_AT_OPTION`:

- a message sent without delay (a submit, a relay pass, a plain ``send``) is ready when
  it is published: stamped in ``before_enqueue``;
- a delayed message (a retry, ``send_with_options(delay=…)``) is ready at its due time,
  its ``eta``: stamped when a worker takes it from Q.DQ (``before_delay_message``). The
  worker then enqueues it again on Q itself, without the eta; that copy keeps the stamp.

A message published by a process without this middleware (metrics off there) counts
from its ``message_timestamp``: the job's creation, for a job submitted at once the same
moment as its publish. Clocks of the hosts are assumed in step (NTP); a negative wait,
from a clock behind another, counts as 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, q_name
from dramatiq.middleware import Middleware

from app.config import Settings
from app.errors import JobCancelled
from app.observability import metrics_dir

if TYPE_CHECKING:
    from app.observability.worker_metrics import JobSeries, WorkerMetrics

#: Message option: when the message became ready to run, in milliseconds since the epoch.
READY_AT_OPTION = "jobstack_ready_at"


def worker_middleware(settings: Settings) -> list[Middleware]:
    """The metrics middleware when JOBSTACK_METRICS_ENABLED is true, else nothing."""
    if not settings.metrics_enabled:
        return []
    return [JobMetrics(metrics_dir=settings.metrics_dir)]


class JobMetrics(Middleware):
    """Counts each attempt by outcome, times it and its queue wait, and gauges the
    attempts running.

    The metrics are created when a worker process boots, in the shared folder; until then
    (and in processes that only publish, such as the API) the middleware only stamps the
    messages it publishes. ``metrics`` given here (tests) are used as they are.
    """

    def __init__(self, *, metrics_dir: str, metrics: WorkerMetrics | None = None) -> None:
        self._dir = metrics_dir
        self._metrics = metrics
        # Whether this process writes to the shared folder (a worker process once booted).
        self._shared = False
        # Per worker thread (every hook of one message runs in the thread processing it):
        # when the attempt it runs started, if this middleware saw it start.
        self._local = threading.local()
        # Delayed messages this process holds until due; enqueued again on their queue
        # by the worker, they keep their due time as their ready time.
        self._delayed: set[str] = set()
        self._delayed_lock = threading.Lock()
        # (queue, actor): its metrics' children; as many as queues × actors.
        self._series: dict[tuple[str, str], JobSeries] = {}

    @property
    def forks(self) -> list[Callable[[], int]]:
        # Imported here: the server needs prometheus_client, which a worker process may
        # import only once its metrics folder is set (after_process_boot, which runs first).
        from app.observability.metrics_server import serve

        return [serve]

    def after_process_boot(self, broker: Broker) -> None:
        if self._metrics is not None:
            return
        metrics_dir.share(self._dir)
        self._shared = True
        # Imported only now, as it imports prometheus_client: see metrics_dir.share.
        from app.observability.worker_metrics import WorkerMetrics

        self._metrics = WorkerMetrics()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if self._shared:
            metrics_dir.leave(self._dir)

    # Ready times ----------------------------------------------------------------------

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if delay is not None:
            return  # Ready at its due time, stamped when a worker takes it (below).
        with self._delayed_lock:
            if message.message_id in self._delayed:
                self._delayed.discard(message.message_id)
                return  # A delayed message now due: its stamp is its due time.
        message.options[READY_AT_OPTION] = current_millis()

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        message.options[READY_AT_OPTION] = message.options["eta"]
        with self._delayed_lock:
            self._delayed.add(message.message_id)

    # Attempts -------------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if self._metrics is None:
            return
        series = self._series_of(message)
        ready_at = message.options.get(READY_AT_OPTION) or message.message_timestamp
        wait = time.time() - ready_at / 1000
        series.queue_wait.observe(max(0.0, wait))
        series.in_progress.inc()
        self._local.started = time.monotonic()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            outcome = "succeeded"
        elif isinstance(exception, JobCancelled):
            outcome = "cancelled"
        elif message.failed:
            outcome = "failed"  # Retries gave up, or the error was permanent.
        else:
            outcome = "retried"
        self._end(message, outcome)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        # Tracking skips duplicates and cancelled jobs before this middleware's
        # before_process_message runs; AgeLimit and periodiq skip after it did. A skip
        # that failed the message (poison, a message past its max_age) is a job failed
        # for good: it counts as failed, as in the job's record and in Sentry.
        self._end(message, "failed" if message.failed else "skipped", skipped=True)

    def _end(self, message: MessageProxy, outcome: str, *, skipped: bool = False) -> None:
        started: float | None = getattr(self._local, "started", None)
        self._local.started = None
        if self._metrics is None:
            return
        series = self._series_of(message)
        if started is not None:
            series.in_progress.dec()
            if not skipped:
                series.duration.observe(time.monotonic() - started)
        elif not skipped:
            # Tracking could not start the job (database unreachable): nothing ran, and
            # Retries schedules the message again. Not an attempt.
            return
        series.attempt_ended(outcome)

    def _series_of(self, message: MessageProxy) -> JobSeries:
        """The metrics of the message's queue (without its .DQ, where a delayed message
        comes from) and actor."""
        key = (q_name(message.queue_name), message.actor_name)
        series = self._series.get(key)
        if series is None:
            from app.observability.worker_metrics import JobSeries

            assert self._metrics is not None
            # Two threads may both make it: the same children, so either is right.
            series = self._series[key] = JobSeries(self._metrics, *key)
        return series
