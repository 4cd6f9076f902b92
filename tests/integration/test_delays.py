"""Delayed jobs wait in the database and start within about a second of being due."""

from __future__ import annotations

import time
from datetime import timedelta

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.jobs import get_job, submit
from app.operations import control
from tests.support.waiting import wait_for_state

#: The relay looks every JOBSTACK_RELAY_INTERVAL (0.2 s in the tests, 1 s by default).
WINDOW = timedelta(seconds=1)


def test_a_delayed_job_starts_within_its_window_and_is_not_held_by_rabbitmq(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job = submit("diagnostics.echo", kwargs={"value": 1}, delay=timedelta(seconds=1.5))
    assert job.state == "scheduled" and job.run_at is not None
    # Nothing waits in RabbitMQ (no unacked delayed message): the row is the schedule.
    assert rabbit.get_queue_message_counts("default") == (0, 0, 0)
    time.sleep(0.5)
    assert get_job(job.id).state == "scheduled"

    done = wait_for_state(job.id, timeout=10)
    assert done.started_at is not None
    assert job.run_at <= done.started_at <= job.run_at + WINDOW


def test_a_scheduled_job_cancelled_before_it_is_due_never_runs(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job = submit("diagnostics.echo", kwargs={"value": 1}, delay=timedelta(seconds=0.5))
    assert control.cancel(job.id).state == "cancelled"
    time.sleep(1.5)
    cancelled = get_job(job.id)
    assert (cancelled.state, cancelled.attempts, cancelled.published_at) == ("cancelled", 0, None)
