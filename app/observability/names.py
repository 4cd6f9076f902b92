"""The names and labels of jobstack's Prometheus metrics: one list for the code that
exports them, the alert rules and the Grafana dashboard (their tests check against it)."""

from __future__ import annotations

#: Worker metrics (each worker host's metrics server): name → labels.
WORKER_METRICS: dict[str, tuple[str, ...]] = {
    "jobstack_job_attempts_total": ("queue", "actor", "outcome"),
    "jobstack_job_duration_seconds": ("queue", "actor"),
    "jobstack_job_queue_wait_seconds": ("queue", "actor"),
    "jobstack_jobs_in_progress": ("queue", "actor"),
}

#: API metrics (the API's /metrics, computed at scrape time): name → labels.
API_METRICS: dict[str, tuple[str, ...]] = {
    "jobstack_jobs": ("queue", "state"),
    "jobstack_queue_oldest_job_age_seconds": ("queue",),
    "jobstack_queue_messages": ("queue", "kind"),
    "jobstack_outbox_pending": (),
    "jobstack_outbox_lag_seconds": (),
    "jobstack_workers_alive": (),
    "jobstack_cron_last_success_timestamp_seconds": ("schedule",),
}

#: The worker metrics that are histograms.
HISTOGRAMS = ("jobstack_job_duration_seconds", "jobstack_job_queue_wait_seconds")

#: Values of the ``outcome`` label of jobstack_job_attempts_total.
OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "skipped")

#: Values of the ``kind`` label of jobstack_queue_messages.
MESSAGE_KINDS = ("ready", "unacked", "delayed", "dead")

#: Histograms export these series besides their own name.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
