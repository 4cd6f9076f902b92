"""Finished jobs over time: succeeded, failed and cancelled per bucket and queue, with
queue-wait and run-time percentiles, for the Overview's charts and counts.

One aggregate query over the ``finished_at`` index: the database counts jobs and
durations into buckets (:mod:`api.dashboard.percentiles`); no row comes back. A bucket
that has closed (a minute ago or more) never changes again, so each API process keeps the
closed ones it has read (:class:`ClosedBuckets`): an open Overview then reads only the
newest minutes, however many jobs the last 24 hours hold.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
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
FINISHED = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)
#: The outcomes charted (a cancellation is neither throughput nor a failure).
CHARTED = (JobState.SUCCEEDED.value, JobState.FAILED.value)
#: A bucket is closed once it ended this long ago: a job's finish is stamped by its worker
#: just before the commit, so a late commit lands in a bucket that is still open.
SETTLE_SECONDS = 60
#: (tenant, bucket size) pairs whose closed buckets a process keeps, least recent dropped.
MAX_CACHED_SERIES = 256
WIDTH = len(BOUNDS) + 1


@dataclass
class BucketCounts:
    """One bucket: jobs by (queue, state), and the duration histograms of each state."""

    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    waits: dict[str, list[int]] = field(default_factory=dict)
    runs: dict[str, list[int]] = field(default_factory=dict)

    def add(self, queue: str, state: str, count: int, waits: list[int], runs: list[int]) -> None:
        self.jobs[(queue, state)] = self.jobs.get((queue, state), 0) + count
        for target, values in ((self.waits, waits), (self.runs, runs)):
            merged = target.setdefault(state, [0] * WIDTH)
            for position, value in enumerate(values):
                merged[position] += value

    def count(self, state: str) -> int:
        return sum(n for (_, s), n in self.jobs.items() if s == state)

    def histogram(self, kind: str, states: tuple[str, ...] = CHARTED) -> list[int]:
        found = [0] * WIDTH
        for state in states:
            for position, value in enumerate(getattr(self, kind).get(state, ())):
                found[position] += value
        return found


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
    #: (queue, state): jobs finished within the window (cancelled ones too).
    finished: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def per_minute(self) -> float:
        """Jobs finished per minute over the window."""
        minutes = len(self.buckets) * self.bucket_seconds / 60
        return (self.succeeded + self.failed) / minutes if minutes else 0.0


def _histogram(duration: Any) -> list[Any]:
    """One SUM per bound: how many durations are at or below it; then how many have one."""
    sums = [func.sum(case((duration <= bound, 1), else_=0)) for bound in BOUNDS]
    return [*sums, func.count(duration)]


def read_buckets(
    session: Session, *, size: int, first: int, last: int, tenant: str | None
) -> dict[int, BucketCounts]:
    """Buckets ``first`` to ``last`` (indexes: seconds since 1970 // ``size``)."""
    dialect = session.get_bind().dialect.name
    bucket = cast(func.floor(epoch_seconds(Job.finished_at, dialect) / size), Integer)
    waited = seconds_between(func.coalesce(Job.run_at, Job.created_at), Job.started_at, dialect)
    ran = seconds_between(Job.started_at, Job.finished_at, dialect)
    finished = select(
        bucket.label("bucket"),
        Job.queue.label("queue"),
        Job.state.label("state"),
        waited.label("waited"),
        ran.label("ran"),
    ).where(
        Job.finished_at >= datetime.fromtimestamp(first * size, UTC),
        Job.finished_at < datetime.fromtimestamp((last + 1) * size, UTC),
        Job.state.in_(FINISHED),
    )
    if tenant is not None:
        finished = finished.where(Job.tenant == tenant)
    # OFFSET 0: PostgreSQL does not merge this subquery into the aggregate, so each row's
    # durations are computed once rather than once for each of the 2 x 19 SUMs.
    rows = finished.offset(0).subquery()
    query = select(
        rows.c.bucket,
        rows.c.queue,
        rows.c.state,
        func.count(),
        *_histogram(rows.c.waited),
        *_histogram(rows.c.ran),
    ).group_by(rows.c.bucket, rows.c.queue, rows.c.state)
    found: dict[int, BucketCounts] = {index: BucketCounts() for index in range(first, last + 1)}
    for index, queue, state, count, *histograms in session.execute(query):
        if index in found:
            values = [int(v or 0) for v in histograms]
            found[index].add(queue, state, count, values[:WIDTH], values[WIDTH:])
    return found


class ClosedBuckets:
    """The closed buckets this process has read, per tenant and bucket size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: OrderedDict[tuple[str | None, int], dict[int, BucketCounts]] = OrderedDict()

    def read(
        self, session: Session, *, size: int, first: int, last: int, tenant: str | None, now: float
    ) -> dict[int, BucketCounts]:
        key = (tenant, size)
        with self._lock:
            kept = {i: b for i, b in self._series.get(key, {}).items() if first <= i <= last}
        start = first
        while start in kept:
            start += 1
        fresh = read_buckets(session, size=size, first=start, last=last, tenant=tenant)
        closed_before = int(now - SETTLE_SECONDS) // size  # Buckets below this index are closed.
        with self._lock:
            series = {**kept, **{i: b for i, b in fresh.items() if i < closed_before}}
            self._series[key] = series
            self._series.move_to_end(key)
            while len(self._series) > MAX_CACHED_SERIES:
                self._series.popitem(last=False)
        return {**kept, **fresh}

    def clear(self) -> None:
        with self._lock:
            self._series.clear()


closed_buckets = ClosedBuckets()


def throughput(session: Session, *, window: str, tenant: str | None, now: datetime) -> Throughput:
    length, size = WINDOWS[window]
    # Buckets aligned on the clock (whole minutes, quarter hours), the newest one partial.
    newest = int(now.timestamp()) // size
    first = newest - (length // size - 1)
    counts = closed_buckets.read(
        session, size=size, first=first, last=newest, tenant=tenant, now=now.timestamp()
    )
    buckets = []
    waits_all, runs_all = [0] * WIDTH, [0] * WIDTH
    finished: dict[tuple[str, str], int] = defaultdict(int)
    for index in range(first, newest + 1):
        data = counts[index]
        wait, run = data.histogram("waits"), data.histogram("runs")
        for position in range(WIDTH):
            waits_all[position] += wait[position]
            runs_all[position] += run[position]
        for pair, count in data.jobs.items():
            finished[pair] += count
        buckets.append(
            Bucket(
                start=datetime.fromtimestamp(index * size, UTC),
                succeeded=data.count(JobState.SUCCEEDED.value),
                failed=data.count(JobState.FAILED.value),
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
        wait_p50=percentile(waits_all, 0.5),
        wait_p95=percentile(waits_all, 0.95),
        wait_p99=percentile(waits_all, 0.99),
        run_p50=percentile(runs_all, 0.5),
        run_p95=percentile(runs_all, 0.95),
        run_p99=percentile(runs_all, 0.99),
        finished=dict(finished),
    )
