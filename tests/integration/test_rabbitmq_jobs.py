"""Jobs on real RabbitMQ and the configured database, with an in-process Dramatiq worker."""

from __future__ import annotations

import time

import dramatiq
import pika
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from actors import diagnostics
from app.jobs import get_job, list_events, submit
from app.messages import message_for
from app.outbox.publish import published_marks
from app.states import JobState
from tests.integration import test_actors
from tests.support.waiting import wait_for_state, wait_until
from tests.support.workers import running_worker

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


def _dead_letter_ids(broker: RabbitmqBroker, queue: str = "default") -> list[str]:
    ids: list[str] = []
    while True:
        method, _properties, body = broker.channel.basic_get(f"{queue}.XQ", auto_ack=True)
        if method is None:
            return ids
        ids.append(Message.decode(body).message_id)


def test_a_submitted_job_runs_to_succeeded_with_its_result(worker: dramatiq.Worker) -> None:
    job = submit(diagnostics.echo, kwargs={"value": {"items": [1, 2, 3]}})

    done = wait_for_state(job.id)
    assert done.state == "succeeded"
    assert done.result == {"items": [1, 2, 3]}
    assert done.attempts == 1
    assert [e.to_state for e in list_events(job.id)] == ["queued", "running", "succeeded"]


def test_progress_reports_reach_the_job_row(worker: dramatiq.Worker) -> None:
    job = submit(diagnostics.sleep, kwargs={"seconds": 2.2})

    done = wait_for_state(job.id)
    progress = [e.data["percent"] for e in list_events(job.id) if e.kind == "progress"]  # type: ignore[index]
    # One report a second, from 0%: at least two in 2.2 s, rising.
    assert progress[0] == 0 and len(progress) >= 2
    assert progress == sorted(progress) and 0 < progress[-1] < 100
    assert (done.state, done.progress) == ("succeeded", 100)


def test_a_job_that_keeps_failing_is_retried_then_failed_and_dead_lettered(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job = submit(diagnostics.fail, kwargs={"times": 99})

    done = wait_for_state(job.id, timeout=30)
    assert done.state == "failed"
    assert done.max_retries == 3
    assert done.attempts == 4  # the first attempt and its 3 retries
    assert done.error_type == "RuntimeError"
    states = [e.to_state for e in list_events(job.id)]
    assert states.count("retrying") == 3
    assert states[-1] == "failed"
    assert wait_until(lambda: _dead_letter_ids(rabbit), 5, "the dead letter") == [job.id]


def test_a_permanent_error_fails_at_once_without_retry(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job = submit(diagnostics.fail, kwargs={"times": 5, "permanent": True})

    done = wait_for_state(job.id)
    assert (done.state, done.attempts, done.error_type) == ("failed", 1, "PermanentError")
    assert "retrying" not in [e.to_state for e in list_events(job.id)]
    assert wait_until(lambda: _dead_letter_ids(rabbit), 5, "the dead letter") == [job.id]


def test_an_attempt_over_its_time_limit_fails_as_a_timeout(worker: dramatiq.Worker) -> None:
    started = time.monotonic()
    job = submit(test_actors.slow, kwargs={"seconds": 30})

    done = wait_for_state(job.id, timeout=15)
    assert time.monotonic() - started < 10  # interrupted, not run to its end
    assert (done.state, done.error_type) == ("failed", "TimeLimitExceeded")
    assert list_events(job.id)[-1].data["reason"] == "timeout"  # type: ignore[index]


def test_with_the_broker_unreachable_submit_returns_a_durable_job_the_relay_publishes(
    rabbit: RabbitmqBroker,
) -> None:
    reachable_parameters = rabbit.parameters
    rabbit.parameters = pika.URLParameters(UNREACHABLE)
    del rabbit.connection
    try:
        job = submit(diagnostics.echo, kwargs={"value": "late"})
    finally:
        rabbit.parameters = reachable_parameters
        del rabbit.connection

    stored = get_job(job.id)
    assert (stored.state, stored.published_at) == ("queued", None)
    assert rabbit.get_queue_message_counts("default")[0] == 0

    with running_worker(rabbit, threads=2):
        done = wait_for_state(job.id, timeout=20)
        assert (done.state, done.result) == ("succeeded", "late")
        # The relay records the publish once RabbitMQ confirmed it (the job may run first).
        wait_until(lambda: get_job(job.id).published_at, 5, "published_at")


def test_a_second_publish_of_a_succeeded_job_does_not_run_it_again(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    test_actors.RUNS.clear()
    job = submit(test_actors.counted)
    finished = wait_for_state(job.id)
    events = len(list_events(job.id))

    rabbit.enqueue(message_for(finished))
    rabbit.join("default", min_successes=5, timeout=10_000)

    assert [job.id] == test_actors.RUNS
    assert get_job(job.id).attempts == 1
    assert len(list_events(job.id)) == events
    assert get_job(job.id).state == JobState.SUCCEEDED.value


def test_published_at_is_when_the_message_went_out_before_the_job_started(
    worker: dramatiq.Worker,
) -> None:
    job_ids = [submit(diagnostics.noop).id for _ in range(100)]  # marked in bulk, later
    job_ids.append(diagnostics.noop.send().message_id)  # a plain send, marked at once
    for job_id in job_ids:
        assert wait_for_state(job_id).state == "succeeded"
    published_marks.flush()

    for job_id in job_ids:
        done = get_job(job_id)
        assert done.published_at is not None and done.started_at is not None, job_id
        assert done.created_at <= done.published_at <= done.started_at, job_id
