"""The numbers behind the API's ``/metrics``, as Prometheus metric families.

They are read when Prometheus asks (:mod:`.job_counts`, :mod:`.queue_counts`) and kept
``JOBSTACK_METRICS_CACHE_SECONDS``: many scrapers, or many Prometheus replicas, cost one
round of queries. A source that cannot be read (database or RabbitMQ down) leaves its
series out of the answer, and the others are still served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import dramatiq
from dramatiq.common import q_name
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app import db
from app.config import Settings
from app.observability.job_counts import JobCounts, read_job_counts
from app.observability.names import API_METRICS
from app.observability.queue_counts import queue_messages
from app.states import JobState
from app.timeutil import utcnow

logger = logging.getLogger(__name__)


def exposition(settings: Settings) -> Callable[[], tuple[bytes, str]]:
    """A function that renders the metrics: the body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        CachedCollector(lambda: read_families(settings), settings.metrics_cache_seconds)
    )
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST)


class CachedCollector(Collector):
    """The families ``read`` returns, read again once they are ``ttl`` seconds old.

    Scrapes that arrive while the numbers are read wait for them instead of reading too.
    """

    def __init__(self, read: Callable[[], list[Metric]], ttl: float) -> None:
        self._read = read
        self._ttl = ttl
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self._read_at = float("-inf")

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._ttl:
                self._families = self._read()
                self._read_at = time.monotonic()
            return list(self._families)


def read_families(settings: Settings) -> list[Metric]:
    """Every API metric, read now from the job database and RabbitMQ."""
    broker = dramatiq.get_broker()
    queues = sorted(name for name in broker.get_declared_queues() if q_name(name) == name)
    families: list[Metric] = []
    now = utcnow()
    try:
        with db.session_scope() as session:
            counts = read_job_counts(
                session,
                now=now,
                gone_after=settings.worker_gone_after,
                schedules=_schedules(broker),
            )
    except Exception:
        logger.warning("/metrics: the job database could not be read.", exc_info=True)
    else:
        families.extend(job_families(counts, queues, now.timestamp()))
    try:
        messages = queue_messages(broker, settings.broker_url)
    except Exception:
        logger.warning("/metrics: RabbitMQ's queues could not be read.", exc_info=True)
    else:
        families.append(
            _gauge(
                "jobstack_queue_messages",
                "Messages of each queue, by kind (ready, unacked, delayed, dead).",
                messages,
            )
        )
    return families


def job_families(counts: JobCounts, queues: list[str], now: float) -> list[Metric]:
    """The database's metrics; every declared queue has its series, at 0 when empty."""
    all_queues = sorted({*queues, *(queue for queue, _state in counts.jobs)})
    jobs = {
        (queue, state.value): counts.jobs.get((queue, state.value), 0)
        for queue in all_queues
        for state in JobState
    }
    oldest = {(queue,): _age(counts.oldest_queued.get(queue), now) for queue in all_queues}
    lag = _age(counts.outbox_oldest, now)
    return [
        _gauge("jobstack_jobs", "Jobs kept in the database, by queue and state.", jobs),
        _gauge(
            "jobstack_queue_oldest_job_age_seconds",
            "Seconds the oldest queued job of each queue has waited since it was queued "
            "(0: none queued).",
            oldest,
        ),
        _gauge(
            "jobstack_outbox_pending",
            "Jobs due and not yet published to RabbitMQ.",
            {(): counts.outbox_pending},
        ),
        _gauge(
            "jobstack_outbox_lag_seconds",
            "Seconds the oldest job due and not yet published has been due (0: none).",
            {(): lag},
        ),
        _gauge(
            "jobstack_workers_alive",
            "Worker processes whose last heartbeat is within JOBSTACK_WORKER_GONE_AFTER.",
            {(): counts.workers_alive},
        ),
        _gauge(
            "jobstack_cron_last_success_timestamp_seconds",
            "When the last successful tick of each schedule finished (Unix time).",
            {(schedule,): at.timestamp() for schedule, at in counts.cron_last_success.items()},
        ),
    ]


def _age(since: datetime | None, now: float) -> float:
    """Seconds from ``since`` to ``now``; 0 for nothing, or for a moment stamped by a host
    whose clock is ahead."""
    return max(0.0, now - since.timestamp()) if since is not None else 0.0


def _gauge(name: str, documentation: str, values: Mapping[Any, float]) -> Metric:
    """A gauge family of ``values`` (label values, in the order of names.py: value)."""
    family = GaugeMetricFamily(name, documentation, labels=API_METRICS[name])
    for labels, value in sorted(values.items()):
        family.add_metric(list(labels), value)
    return family


def _schedules(broker: dramatiq.Broker) -> list[str]:
    """The periodic actors (one schedule each, named after its actor: see app/cron.py)."""
    return [
        name
        for name in broker.get_declared_actors()
        if broker.get_actor(name).options.get("periodic") is not None
    ]
