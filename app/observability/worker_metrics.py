"""The four metrics a worker process counts, in prometheus_client's terms.

Importing this module imports prometheus_client, which picks single- or multi-process
values when it is first imported: worker processes import it only once their metrics
folder is set (:func:`app.observability.metrics_dir.share`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.observability.names import WORKER_METRICS

#: Seconds: from a few milliseconds to the longest attempt (JOBSTACK_MAX_TIME_LIMIT).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1500)

#: Seconds: a busy queue's backlog is counted in minutes, an idle one's in milliseconds.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    """Attempts by outcome, their durations and queue waits, and the jobs running now.

    ``registry`` is for tests; a worker process registers nothing, its values go to the
    shared folder the metrics server reads.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.attempts = Counter(
            "jobstack_job_attempts_total",
            "Attempts that ended, by outcome (succeeded, failed, retried, cancelled, skipped).",
            WORKER_METRICS["jobstack_job_attempts_total"],
            registry=registry,
        )
        self.duration = Histogram(
            "jobstack_job_duration_seconds",
            "Seconds an attempt ran (the actor and the middleware after the job's start).",
            WORKER_METRICS["jobstack_job_duration_seconds"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "jobstack_job_queue_wait_seconds",
            "Seconds from a message's publish, or its due time when delayed, to its start.",
            WORKER_METRICS["jobstack_job_queue_wait_seconds"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "jobstack_jobs_in_progress",
            "Attempts running now.",
            WORKER_METRICS["jobstack_jobs_in_progress"],
            # Summed over the live processes: a dead process's running jobs are not running.
            multiprocess_mode="livesum",
            registry=registry,
        )


class JobSeries:
    """One (queue, actor)'s children of the four metrics, looked up once: ``labels()``
    validates and locks on every call, a third of the metrics' cost per job (measured)."""

    def __init__(self, metrics: WorkerMetrics, queue: str, actor: str) -> None:
        self.queue_wait = metrics.queue_wait.labels(queue, actor)
        self.duration = metrics.duration.labels(queue, actor)
        self.in_progress = metrics.in_progress.labels(queue, actor)
        self._attempts = metrics.attempts
        self._labels = (queue, actor)
        self._by_outcome: dict[str, Counter] = {}

    def attempt_ended(self, outcome: str) -> None:
        counter = self._by_outcome.get(outcome)
        if counter is None:
            counter = self._by_outcome[outcome] = self._attempts.labels(*self._labels, outcome)
        counter.inc()
