"""The worker metrics middleware on the stub broker, with jobstack's whole stack around it:
each attempt counted once by its outcome, durations, queue waits and jobs in progress."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from prometheus_client import CollectorRegistry

from app.broker import build_middleware
from app.config import Settings
from app.context import current_job
from app.errors import JobCancelled, PermanentError
from app.jobs import get_job, submit
from app.messages import message_for
from app.middleware.tracking import Tracking
from app.observability.metrics import READY_AT_OPTION, JobMetrics, worker_middleware
from app.observability.names import OUTCOMES
from app.observability.worker_metrics import WorkerMetrics
from tests.support.waiting import wait_until
from tests.support.workers import close_broker, running_worker


@dataclass
class Counted:
    broker: StubBroker
    registry: CollectorRegistry
    actors: dict[str, dramatiq.Actor[Any, Any]]

    def attempts(self, actor: str, outcome: str) -> float:
        return self.value(
            "jobstack_job_attempts_total", queue="default", actor=actor, outcome=outcome
        )

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def drain(self) -> None:
        self.broker.join("default", fail_fast=False)


@pytest.fixture
def counted(clean_db: str) -> Iterator[Counted]:
    registry = CollectorRegistry()
    middleware = build_middleware(Settings(broker_url="stub://"))
    # Where worker_middleware() puts it: right after Tracking.
    assert isinstance(middleware[0], Tracking)
    middleware.insert(1, JobMetrics(metrics_dir="unused", metrics=WorkerMetrics(registry)))
    broker = StubBroker(middleware=middleware)
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, actor_name="m.echo")
    def echo(value: Any) -> Any:
        return value

    @dramatiq.actor(broker=broker, actor_name="m.flaky", min_backoff=10, max_backoff=20)
    def flaky(times: int) -> int:
        attempt = current_job().attempt
        if attempt <= times:
            raise RuntimeError(f"attempt {attempt} fails")
        return attempt

    @dramatiq.actor(broker=broker, actor_name="m.broken")
    def broken() -> None:
        raise PermanentError("never works")

    @dramatiq.actor(broker=broker, actor_name="m.cancelled")
    def cancelled() -> None:
        raise JobCancelled()

    actors: dict[str, dramatiq.Actor[Any, Any]] = {
        "echo": echo,
        "flaky": flaky,
        "broken": broken,
        "cancelled": cancelled,
    }
    with running_worker(broker, threads=2):
        yield Counted(broker, registry, actors)
    close_broker(broker)


def test_each_attempt_is_counted_once_by_its_outcome(counted: Counted) -> None:
    submit(counted.actors["echo"], kwargs={"value": 1})
    submit(counted.actors["echo"], kwargs={"value": 2})
    submit(counted.actors["flaky"], kwargs={"times": 2})
    submit(counted.actors["broken"])
    submit(counted.actors["cancelled"])
    counted.drain()

    outcomes = {
        (actor, outcome): counted.attempts(actor, outcome)
        for actor in ("m.echo", "m.flaky", "m.broken", "m.cancelled")
        for outcome in OUTCOMES
    }
    assert {key: n for key, n in outcomes.items() if n} == {
        ("m.echo", "succeeded"): 2,
        ("m.flaky", "retried"): 2,
        ("m.flaky", "succeeded"): 1,
        ("m.broken", "failed"): 1,
        ("m.cancelled", "cancelled"): 1,
    }
    # One duration and one queue wait per attempt that ran, none left in progress.
    for actor, attempts in (("m.echo", 2), ("m.flaky", 3), ("m.broken", 1)):
        labels = {"queue": "default", "actor": actor}
        assert counted.value("jobstack_job_duration_seconds_count", **labels) == attempts
        assert counted.value("jobstack_job_queue_wait_seconds_count", **labels) == attempts
        assert counted.value("jobstack_jobs_in_progress", **labels) == 0


def test_retries_come_from_the_delay_queue_under_their_queue_name(counted: Counted) -> None:
    submit(counted.actors["flaky"], kwargs={"times": 1})
    counted.drain()

    samples = [
        sample
        for family in counted.registry.collect()
        for sample in family.samples
        if sample.name == "jobstack_job_attempts_total"
    ]
    assert {sample.labels["queue"] for sample in samples} == {"default"}
    assert counted.attempts("m.flaky", "retried") == 1


def test_a_duplicate_message_is_skipped_without_a_duration(counted: Counted) -> None:
    job = submit(counted.actors["echo"], kwargs={"value": 1})
    counted.drain()
    # The same job's message again (a duplicate publish): Tracking skips it before this
    # middleware's before_process_message runs.
    counted.broker.enqueue(message_for(get_job(job.id)))
    counted.drain()

    assert counted.attempts("m.echo", "succeeded") == 1
    assert counted.attempts("m.echo", "skipped") == 1
    labels = {"queue": "default", "actor": "m.echo"}
    assert counted.value("jobstack_job_duration_seconds_count", **labels) == 1
    assert counted.value("jobstack_jobs_in_progress", **labels) == 0


def test_a_message_failed_by_a_skip_after_its_start_counts_as_failed_with_nothing_in_progress(
    counted: Counted,
) -> None:
    # AgeLimit, after this middleware, fails and skips a message past its max_age: the
    # job ends failed, as its record and Sentry say.
    counted.broker.enqueue(
        Message(
            queue_name="default",
            actor_name="m.echo",
            args=(1,),
            kwargs={},
            options={"max_age": 1_000},
            message_timestamp=current_millis() - 60_000,
        )
    )
    counted.drain()

    assert counted.attempts("m.echo", "failed") == 1
    assert counted.attempts("m.echo", "skipped") == 0
    labels = {"queue": "default", "actor": "m.echo"}
    assert counted.value("jobstack_jobs_in_progress", **labels) == 0
    assert counted.value("jobstack_job_duration_seconds_count", **labels) == 0


def test_the_queue_wait_of_a_message_counts_from_its_publish(counted: Counted) -> None:
    # Built a minute ago, published now: it waited since now.
    counted.broker.enqueue(
        Message(
            queue_name="default",
            actor_name="m.echo",
            args=(1,),
            kwargs={},
            options={},
            message_timestamp=current_millis() - 60_000,
        )
    )
    counted.drain()

    labels = {"queue": "default", "actor": "m.echo"}
    assert counted.value("jobstack_job_queue_wait_seconds_count", **labels) == 1
    assert counted.value("jobstack_job_queue_wait_seconds_sum", **labels) < 5


def test_the_queue_wait_of_a_delayed_message_counts_from_its_due_time(counted: Counted) -> None:
    counted.actors["echo"].send_with_options(args=(1,), delay=1_500)
    labels = {"queue": "default", "actor": "m.echo"}
    wait_until(
        lambda: counted.value("jobstack_job_queue_wait_seconds_count", **labels) == 1,
        10,
        "the delayed message to run",
    )
    # Not the 1.5 s it was delayed: the wait starts at its due time.
    assert counted.value("jobstack_job_queue_wait_seconds_sum", **labels) < 1.0


def test_a_delayed_message_keeps_its_due_time_when_the_worker_enqueues_it_again() -> None:
    middleware = JobMetrics(metrics_dir="unused")
    broker = StubBroker(middleware=[middleware])
    eta = current_millis() + 5_000
    delayed: Message[Any] = Message("default.DQ", "m.echo", (), {}, {"eta": eta})
    proxy = MessageProxy(delayed)

    middleware.before_delay_message(broker, proxy)
    due = proxy.copy(queue_name="default")
    del due.options["eta"]
    middleware.before_enqueue(broker, due, None)
    assert due.options[READY_AT_OPTION] == eta

    # The next publish of that message (a later retry, a requeue) is stamped anew.
    again = due.copy()
    middleware.before_enqueue(broker, again, None)
    assert again.options[READY_AT_OPTION] >= current_millis() - 1_000
    close_broker(broker)


def test_metrics_are_off_by_default_and_never_dramatiqs_own() -> None:
    assert worker_middleware(Settings()) == []
    on = worker_middleware(Settings(metrics_enabled=True, metrics_dir="/tmp/m"))
    assert [type(m) for m in on] == [JobMetrics]
    enabled = build_middleware(Settings(broker_url="stub://", metrics_enabled=True))
    assert isinstance(enabled[1], JobMetrics)
    # Dramatiq's own counts a retry twice and its delayed gauge goes below zero.
    modules = {type(m).__module__ for m in enabled}
    assert "dramatiq.middleware.prometheus" not in modules
