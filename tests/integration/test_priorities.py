"""Per-job priorities, honoured by RabbitMQ within a queue."""

from __future__ import annotations

import threading

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.jobs import get_job, submit
from app.recording import claims
from app.states import JobState
from tests.integration import test_actors
from tests.support.waiting import wait_for_state
from tests.support.workers import running_worker

BACKLOG = 30

# Quorum queues before RabbitMQ 4.0 ignore per-message priority (docs/scaling.md).
pytestmark = pytest.mark.classic


def test_a_high_priority_job_starts_before_the_backlog_ahead_of_it_drains(
    rabbit: RabbitmqBroker,
) -> None:
    gate = test_actors.GATES["priorities"] = threading.Event()
    with running_worker(rabbit, threads=1) as worker:
        # The only thread is held while the backlog and the urgent job are queued: how
        # fast submits go against the worker then decides nothing.
        holder = submit(test_actors.gated, kwargs={"gate": "priorities"})
        try:
            wait_for_state(holder.id, {JobState.RUNNING})
            backlog = [submit(test_actors.step, kwargs={"seconds": 0.05}) for _ in range(BACKLOG)]
            urgent = submit(test_actors.step, kwargs={"seconds": 0.05}, priority=9)
        finally:
            gate.set()
        urgent_started = wait_for_state(urgent.id, timeout=30).started_at
        for job in backlog:
            wait_for_state(job.id, timeout=30)

    assert urgent_started is not None
    starts = [get_job(job.id).started_at for job in backlog]
    jumped_ahead_of = [at for at in starts if at and at > urgent_started]
    overtook = [at for at in starts if at and urgent.created_at < at < urgent_started]
    # Only what the worker had already taken when it was submitted (the job running, and
    # the prefetched ones: threads x 5) may start before it; RabbitMQ hands it out ahead
    # of everything still queued.
    prefetched = worker.worker_threads * claims.PREFETCH_PER_THREAD
    assert len(overtook) <= prefetched + 1, f"{len(overtook)} backlog jobs overtook it"
    assert len(jumped_ahead_of) >= BACKLOG // 2, "it did not start before the backlog drained"
