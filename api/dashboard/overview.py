"""The Overview page's numbers: jobs by state and queue, throughput charts, queue depths,
workers, the outbox, and what is wrong.

Counts stay cheap on a large table: unfinished jobs are counted exactly (few, through the
state index); finished ones only over the last 24 hours, from the chart's buckets
(:mod:`api.dashboard.throughput`), never over every row kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dramatiq
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from api.dashboard.queue_view import QueueView, queue_views
from api.dashboard.schedule_view import ScheduleView, schedule_views
from api.dashboard.throughput import Throughput, throughput
from app.config import Settings
from app.models import Job, Worker
from app.observability.job_counts import UNPUBLISHED_STATES
from app.states import JobState

UNFINISHED = ("scheduled", "queued", "running", "retrying")
FINISHED = ("succeeded", "failed", "cancelled")
STATES = UNFINISHED + FINISHED


@dataclass(frozen=True)
class Alert:
    """Something an operator should look at, in a sentence, with where to look."""

    message: str
    link: str


@dataclass
class Overview:
    now: datetime
    #: queue: state: jobs (finished states: the last 24 hours).
    counts: dict[str, dict[str, int]]
    charts: list[Throughput]
    queues: list[QueueView] | None
    """RabbitMQ's numbers: admins only (they are every tenant's)."""
    workers_alive: int | None
    outbox_pending: int | None
    outbox_oldest: datetime | None
    alerts: list[Alert] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        found: dict[str, int] = defaultdict(int)
        for states in self.counts.values():
            for state, count in states.items():
                found[state] += count
        return {state: found.get(state, 0) for state in STATES}


def job_counts(
    session: Session, tenant: str | None, finished: dict[tuple[str, str], int]
) -> dict[str, dict[str, int]]:
    """Queue: state: jobs; unfinished ones counted now, ``finished`` ones as given (the
    last 24 hours' buckets)."""
    query = select(Job.queue, Job.state, func.count()).where(Job.state.in_(UNFINISHED))
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATES, 0))
    for queue, state, count in session.execute(query.group_by(Job.queue, Job.state)):
        counts[queue][state] += count
    for (queue, state), count in finished.items():
        counts[queue][state] += count
    return dict(sorted(counts.items()))


def alive_workers(session: Session, now: datetime, gone_after: float) -> list[Worker]:
    return list(
        session.scalars(
            select(Worker).where(
                Worker.stopped_at.is_(None),
                Worker.last_seen >= now - timedelta(seconds=gone_after),
            )
        )
    )


def outbox(session: Session, now: datetime) -> tuple[int, datetime | None]:
    """Jobs due and not yet published, and since when the oldest is due (the relay's
    partial index ``ix_jobs_unpublished`` holds exactly those rows)."""
    due_since = func.coalesce(Job.run_at, Job.updated_at)
    count, oldest = session.execute(
        select(func.count(), func.min(due_since)).where(
            Job.published_at.is_(None),
            Job.state.in_(UNPUBLISHED_STATES),
            or_(Job.state == JobState.QUEUED.value, and_(Job.run_at <= now)),
        )
    ).one()
    return int(count or 0), oldest


def _alerts(
    counts: dict[str, dict[str, int]],
    queues: list[QueueView],
    workers: list[Worker],
    schedules: list[ScheduleView],
    dead_history: DeadLetterHistory,
    now: datetime,
) -> list[Alert]:
    alerts = []
    consumed = {queue for worker in workers for queue in worker.queues}
    for view in queues:
        waiting = view.ready + counts.get(view.name, {}).get("queued", 0)
        if waiting and view.name not in consumed and not view.consumers:
            alerts.append(
                Alert(f"No worker consumes queue {view.name!r}: {waiting} jobs wait.", "/workers")
            )
        growth = dead_history.growth(view.name, view.dead, now)
        if growth > 0:
            alerts.append(
                Alert(
                    f"Dead letters in {view.name!r} grew by {growth} in the last "
                    f"{int(DeadLetterHistory.SPAN.total_seconds() // 60)} minutes "
                    f"({view.dead} now).",
                    f"/dead-letters?queue={view.name}",
                )
            )
    for schedule in schedules:
        if schedule.missed:
            alerts.append(
                Alert(
                    f"Schedule {schedule.actor!r} missed {schedule.missed} tick(s) "
                    "(is the scheduler running?).",
                    "/schedules",
                )
            )
    return alerts


class DeadLetterHistory:
    """Dead-letter counts this process saw lately, to tell a growing queue from an old one."""

    SPAN = timedelta(minutes=10)

    def __init__(self) -> None:
        self._seen: dict[str, list[tuple[datetime, int]]] = defaultdict(list)

    def growth(self, queue: str, count: int, now: datetime) -> int:
        """How much ``count`` grew over the readings of the last :data:`SPAN`."""
        readings = [(at, seen) for at, seen in self._seen[queue] if at >= now - self.SPAN]
        readings.append((now, count))
        self._seen[queue] = readings[-100:]
        return max(0, count - min(seen for _, seen in readings))


dead_letter_history = DeadLetterHistory()


def overview(
    session: Session,
    *,
    tenant: str | None,
    admin: bool,
    broker: dramatiq.Broker,
    settings: Settings,
    now: datetime,
) -> Overview:
    charts = [throughput(session, window=w, tenant=tenant, now=now) for w in ("1h", "24h")]
    counts = job_counts(session, tenant, charts[1].finished)
    if not admin:
        return Overview(now, counts, charts, None, None, None, None)
    queues = queue_views(session, broker, settings.broker_url, now)
    workers = alive_workers(session, now, settings.worker_gone_after)
    pending, oldest = outbox(session, now)
    schedules = schedule_views(session, broker, now)
    alerts = _alerts(counts, queues, workers, schedules, dead_letter_history, now)
    return Overview(now, counts, charts, queues, len(workers), pending, oldest, alerts)
