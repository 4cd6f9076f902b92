"""Each queue as operators see it: messages in RabbitMQ (ready, unacked, delayed, dead),
consumers, the jobs behind them in the database, the rate they finish at, and how long
the backlog takes to drain at that rate."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, unquote, urlsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, q_name
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Job
from app.observability.queue_counts import management_api, unacked_messages
from app.operations.queues import queue_stats
from app.states import JobState

#: The finishing rate is measured over this much of the recent past.
RATE_WINDOW = timedelta(minutes=5)
#: How long an answer of the management API is reused (RabbitMQ refreshes its numbers
#: every 5 s), and how long one that did not answer is left alone (each try may wait
#: its 2 s timeout, on every open page's refresh).
MANAGEMENT_FRESH_SECONDS = 5.0
MANAGEMENT_RETRY_SECONDS = 30.0


class _Unacked:
    """The management API's unacked counts, asked at most every few seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._value: dict[str, int] | None = None

    def get(self, broker_url: str) -> dict[str, int] | None:
        with self._lock:
            if time.monotonic() < self._until:
                return self._value
            self._value = unacked_messages(*management_api(broker_url))
            wait = MANAGEMENT_FRESH_SECONDS if self._value is not None else MANAGEMENT_RETRY_SECONDS
            self._until = time.monotonic() + wait
            return self._value


unacked_counts = _Unacked()


@dataclass(frozen=True)
class QueueView:
    name: str
    ready: int
    unacked: int | None
    """None when RabbitMQ's management API does not answer."""
    delayed: int
    dead: int
    consumers: int
    oldest_queued_at: datetime | None
    finished_per_second: float

    @property
    def backlog(self) -> int:
        return self.ready + (self.unacked or 0)

    @property
    def drain_seconds(self) -> float | None:
        """Time to work through the backlog at the current rate; None when nothing moves."""
        if self.backlog == 0:
            return 0.0
        if self.finished_per_second <= 0:
            return None
        return self.backlog / self.finished_per_second


def oldest_queued(session: Session, tenant: str | None) -> dict[str, datetime]:
    """Queue: since when its longest-waiting queued job waits (ix_jobs_state_created_at)."""
    query = (
        select(Job.queue, func.min(Job.updated_at))
        .where(Job.state == JobState.QUEUED.value)
        .group_by(Job.queue)
    )
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    return {queue: since for queue, since in session.execute(query) if since is not None}


def finish_rates(session: Session, now: datetime, tenant: str | None) -> dict[str, float]:
    """Queue: jobs finished per second over :data:`RATE_WINDOW`."""
    query = (
        select(Job.queue, func.count())
        .where(Job.finished_at >= now - RATE_WINDOW)
        .group_by(Job.queue)
    )
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    seconds = RATE_WINDOW.total_seconds()
    return {queue: count / seconds for queue, count in session.execute(query)}


def queue_views(
    session: Session, broker: dramatiq.Broker, broker_url: str, now: datetime
) -> list[QueueView]:
    """Every declared queue (admins: RabbitMQ's numbers are every tenant's)."""
    unacked = None
    if isinstance(broker, RabbitmqBroker):
        unacked = unacked_counts.get(broker_url)
    oldest = oldest_queued(session, None)
    rates = finish_rates(session, now, None)
    views = []
    for stats in queue_stats(broker):
        if q_name(stats.name) != stats.name:
            continue  # The stub broker lists its delay queues among its queues.
        held = None
        if unacked is not None:
            # Workers hold Q.DQ's messages unacked until they are due: still delayed.
            held = unacked.get(stats.name, 0)
        views.append(
            QueueView(
                name=stats.name,
                ready=stats.ready,
                unacked=held,
                delayed=stats.delayed + (unacked or {}).get(dq_name(stats.name), 0),
                dead=stats.dead_letter,
                consumers=stats.consumers,
                oldest_queued_at=oldest.get(stats.name),
                finished_per_second=rates.get(stats.name, 0.0),
            )
        )
    return views


def management_ui(broker_url: str, configured: str) -> str:
    """Base URL of RabbitMQ's management UI: the setting, else the broker's host on the
    management port (http, or https for amqps://)."""
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(broker_url.split(";")[0])
    scheme = "https" if parts.scheme == "amqps" else "http"
    port = 15671 if parts.scheme == "amqps" else 15672
    return f"{scheme}://{parts.hostname or '127.0.0.1'}:{port}"


def management_queue_link(base: str, broker_url: str, queue: str) -> str:
    """The management UI's page of ``queue`` (``#/queues/<vhost>/<name>``)."""
    path = urlsplit(broker_url.split(";")[0]).path
    vhost = unquote(path[1:]) if len(path) > 1 else "/"
    return f"{base}/#/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
