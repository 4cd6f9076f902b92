"""Finished jobs over time: succeeded and failed per bucket, with queue-wait and run-time
percentiles, for the Overview's charts.

One aggregate query per window over the ``finished_at`` index: the database counts jobs
and durations into buckets (:mod:`api.dashboard.percentiles`); no row comes back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.orm import Session

from api.dashboard.percentiles import BOUNDS, percentile
from api.dashboard.sql_time import epoch_seconds, seconds_between
from app.models import Job
from app.states import JobState

#: name: (length, bucket) in seconds.
WINDOWS = {"1h": (3600, 60), "24h": (86400, 900)}
OUTCOMES = (JobState.SUCCEEDED.value, JobState.FAILED.value)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    succeeded: int
    failed: int
    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None


@dataclass(frozen=True)
class Throughput:
    window: str
    bucket_seconds: int
    buckets: list[Bucket]
    succeeded: int
    failed: int
    wait_p50: float | None
    wait_p95: float | None
    wait_p99: float | None
    run_p50: float | None
    run_p95: float | None
    run_p99: float | None

    @property
    def per_minute(self) -> float:
        """Jobs finished per minute over the window."""
        minutes = len(self.buckets) * self.bucket_seconds / 60
        return (self.succeeded + self.failed) / minutes if minutes else 0.0


def _bucket_counts(duration: Any) -> list[Any]:
    """One SUM per bound: how many durations are at or below it; then how many have one."""
    sums = [func.sum(case((duration <= bound, 1), else_=0)) for bound in BOUNDS]
    return [*sums, func.count(duration)]


def throughput(session: Session, *, window: str, tenant: str | None, now: datetime) -> Throughput:
    length, size = WINDOWS[window]
    dialect = session.get_bind().dialect.name
    # Buckets aligned on the clock (whole minutes, quarter hours), the newest one partial.
    newest = int(now.timestamp()) // size * size
    first = newest - (length // size - 1) * size
    since = datetime.fromtimestamp(first, UTC)
    bucket = cast(func.floor(epoch_seconds(Job.finished_at, dialect) / size), Integer)
    waited = seconds_between(func.coalesce(Job.run_at, Job.created_at), Job.started_at, dialect)
    ran = seconds_between(Job.started_at, Job.finished_at, dialect)
    query = (
        select(bucket, Job.state, func.count(), *_bucket_counts(waited), *_bucket_counts(ran))
        .where(Job.finished_at >= since, Job.state.in_(OUTCOMES))
        .group_by(bucket, Job.state)
    )
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    width = len(BOUNDS) + 1
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    waits: dict[int, list[int]] = defaultdict(lambda: [0] * width)
    runs: dict[int, list[int]] = defaultdict(lambda: [0] * width)
    for index, state, count, *histograms in session.execute(query):
        counts[index][state] += count
        for target, values in (
            (waits[index], histograms[:width]),
            (runs[index], histograms[width:]),
        ):
            for position, value in enumerate(values):
                target[position] += int(value or 0)
    buckets = []
    wait_all, run_all = [0] * width, [0] * width
    for start in range(first, newest + size, size):
        index = start // size
        wait, run = waits[index], runs[index]
        for position in range(width):
            wait_all[position] += wait[position]
            run_all[position] += run[position]
        buckets.append(
            Bucket(
                start=datetime.fromtimestamp(start, UTC),
                succeeded=counts[index][JobState.SUCCEEDED.value] if index in counts else 0,
                failed=counts[index][JobState.FAILED.value] if index in counts else 0,
                wait_p50=percentile(wait, 0.5),
                wait_p95=percentile(wait, 0.95),
                run_p50=percentile(run, 0.5),
                run_p95=percentile(run, 0.95),
            )
        )
    return Throughput(
        window=window,
        bucket_seconds=size,
        buckets=buckets,
        succeeded=sum(b.succeeded for b in buckets),
        failed=sum(b.failed for b in buckets),
        wait_p50=percentile(wait_all, 0.5),
        wait_p95=percentile(wait_all, 0.95),
        wait_p99=percentile(wait_all, 0.99),
        run_p50=percentile(run_all, 0.5),
        run_p95=percentile(run_all, 0.95),
        run_p99=percentile(run_all, 0.99),
    )
