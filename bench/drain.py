"""Drain rate: N no-op messages, bare Dramatiq against jobstack, same RabbitMQ, same -p/-t.

Each run fills the queue first, then starts ``dramatiq`` and times from the first message
taken to the queue holding no ready message (worker start-up excluded). A worker may still
hold up to threads × 2 prefetched messages then; for jobstack the time until every job is
recorded ``succeeded`` is reported too.

Run by ``python -m bench`` (make bench).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.services import (
    QueueWatch,
    fresh_database,
    peak_rss_mib,
    postgres_commits,
    start_worker,
    stop,
    worker_cpu_seconds,
)


def _time_drain(
    queue: str,
    total: int,
    worker: Any,
    timeout: float = 600,
    on_start: Callable[[], None] | None = None,
) -> float:
    watch = QueueWatch(queue)
    try:
        deadline = time.monotonic() + timeout
        started = None
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            ready = watch.ready()
            now = time.monotonic()
            if started is None and ready < total:
                started = now
                if on_start is not None:
                    on_start()
            if started is not None and ready == 0:
                return now - started
            time.sleep(0.02)
    finally:
        watch.close()
    raise TimeoutError(f"{queue} did not drain in {timeout}s")


def bare(total: int, processes: int, threads: int, work: Path) -> dict[str, Any]:
    """Bare Dramatiq (its default middleware) draining ``total`` no-op messages."""
    from bench import bare_actors

    bare_actors.broker.declare_queue(bare_actors.QUEUE, ensure=True)
    bare_actors.broker.flush(bare_actors.QUEUE)
    for _ in range(total):
        bare_actors.noop.send()
    worker = start_worker(
        "bench.bare_actors", processes, threads, dict(os.environ), work / "bare.log"
    )
    try:
        cpu_at_start: list[float] = []
        seconds = _time_drain(
            bare_actors.QUEUE,
            total,
            worker,
            on_start=lambda: cpu_at_start.append(worker_cpu_seconds(worker)),
        )
        cpu = worker_cpu_seconds(worker) - cpu_at_start[0]
        rss = peak_rss_mib(worker)
    finally:
        stop(worker)
    return {
        "system": "bare dramatiq",
        "seconds": seconds,
        "per_second": total / seconds,
        "worker_peak_rss_mib": rss,
        "worker_cpu_ms_per_job": 1000 * cpu / total,
    }


def jobstack(
    backend: str,
    total: int,
    processes: int,
    threads: int,
    work: Path,
    *,
    worker_env: dict[str, str] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """jobstack with full tracking draining ``total`` ``diagnostics.noop`` jobs; the
    worker gets ``worker_env`` on top (observability switched on, say)."""
    url = fresh_database(backend, work)
    env = {**os.environ, "JOBSTACK_DATABASE_URL": url, "JOBSTACK_LOG_FORMAT": "text"}
    ids = fill_backlog(url, total)
    from app import db

    commits_before = postgres_commits() if backend == "postgres" else None
    name = f"jobstack-{backend}{'-' + label if label else ''}"
    worker = start_worker(
        "actors", processes, threads, {**env, **(worker_env or {})}, work / f"{name}.log"
    )
    try:
        started = time.monotonic()
        cpu_at_start: list[float] = []
        seconds = _time_drain(
            "default",
            total,
            worker,
            on_start=lambda: cpu_at_start.append(worker_cpu_seconds(worker)),
        )
        recorded = _all_succeeded(len(ids), started)
        cpu = worker_cpu_seconds(worker) - cpu_at_start[0]
        rss = peak_rss_mib(worker)
    finally:
        stop(worker)
        db.get_engine().dispose()
    row: dict[str, Any] = {
        "system": f"jobstack ({backend}{', ' + label if label else ''})",
        "seconds": seconds,
        "per_second": total / seconds,
        "recorded_seconds": recorded,
        # Start-up excluded: from the first message taken to every job recorded.
        "worker_cpu_ms_per_job": 1000 * cpu / total,
        "worker_peak_rss_mib": rss,
    }
    if commits_before is not None:
        row["worker_commits_per_job"] = (postgres_commits() - commits_before) / total
    return row


def fill_backlog(url: str, total: int) -> list[str]:
    """Migrate the empty database ``url``, make it this process's job database, and submit
    ``total`` ``diagnostics.noop`` jobs to an emptied queue; their ids, once published."""
    # Before jobstack is imported: its broker reads the settings at import.
    os.environ.update(JOBSTACK_DATABASE_URL=url, JOBSTACK_LOG_FORMAT="text")
    from app import db
    from app.migrations import migrate

    migrate.upgrade(url)
    db.configure(url)
    import actors  # noqa: F401  (declares the actors on jobstack's broker)
    from actors import diagnostics
    from app.broker import broker
    from app.jobs import submit
    from app.outbox.publish import published_marks

    assert isinstance(broker, RabbitmqBroker)
    broker.declare_queue("default", ensure=True)
    broker.flush_all()
    # One transaction for the whole backlog: the drain is measured, not the filling.
    with db.session_scope() as session:
        ids = [submit(diagnostics.noop, session=session).id for _ in range(total)]
    published_marks.flush()  # Not while the worker drains.
    return ids


def _all_succeeded(total: int, started: float) -> float:
    from sqlalchemy import func, select

    from app import db
    from app.models import Job

    while True:
        with db.session_scope() as session:
            done = session.scalar(
                select(func.count()).select_from(Job).where(Job.state == "succeeded")
            )
        if done == total:
            return time.monotonic() - started
        time.sleep(0.05)
