"""Sentry's events on the stub broker and in the Flask app: one per job that fails for good,
none for an attempt that is retried, none for an HTTP error raised on purpose."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
import sentry_sdk
from dramatiq.brokers.stub import StubBroker
from sentry_sdk.integrations.dramatiq import SentryMiddleware

from app.broker import build_middleware
from app.config import load_settings
from app.context import current_job
from app.errors import PermanentError
from app.jobs import get_job, submit
from app.observability.error_reports import init_error_reports
from app.observability.job_error_reports import JobErrorReports, current_trace_id
from app.states import JobState
from tests.support.sentry_receiver import SentryReceiver, tags
from tests.support.workers import close_broker, running_worker


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[SentryReceiver]:
    """Sentry started by jobstack, sending to a receiver in this process; stopped after."""
    with SentryReceiver() as receiver:
        monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
        init_error_reports(load_settings())
        try:
            yield receiver
        finally:
            sentry_sdk.get_client().close()
            sentry_sdk.get_global_scope().set_client(None)


@dataclass
class Actors:
    broker: StubBroker
    flaky: dramatiq.Actor[Any, Any]
    broken: dramatiq.Actor[Any, Any]
    slow: dramatiq.Actor[Any, Any]
    retrying: dramatiq.Actor[Any, Any]


@pytest.fixture
def actors(receiver: SentryReceiver, clean_db: str) -> Iterator[Actors]:
    broker = StubBroker(middleware=build_middleware())
    broker.emit_after("process_boot")

    @dramatiq.actor(
        broker=broker, actor_name="t.flaky", max_retries=2, min_backoff=10, max_backoff=20
    )
    def flaky(times: int) -> int:
        attempt = current_job().attempt
        if attempt <= times:
            raise RuntimeError(f"attempt {attempt} fails")
        return attempt

    @dramatiq.actor(broker=broker, actor_name="t.broken")
    def broken() -> None:
        raise PermanentError("the input can never work")

    @dramatiq.actor(broker=broker, actor_name="t.slow", time_limit=50, max_retries=0)
    def slow() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # Short sleeps: TimeLimit interrupts between.
            time.sleep(0.01)

    @dramatiq.actor(broker=broker, actor_name="t.retrying", max_retries=1)
    def retrying() -> None:
        raise dramatiq.Retry(delay=10)

    with running_worker(broker, threads=2):
        yield Actors(broker, flaky, broken, slow, retrying)
    close_broker(broker)


def _events_after_drain(actors: Actors, receiver: SentryReceiver, job_id: str) -> list[Any]:
    actors.broker.join("default", fail_fast=False)
    sentry_sdk.flush(timeout=5)
    return receiver.events_of(job_id)


def test_sentry_middleware_runs_first_and_jobstack_s_after_tracking(actors: Actors) -> None:
    kinds = [type(m).__name__ for m in actors.broker.middleware]
    assert isinstance(actors.broker.middleware[0], SentryMiddleware)
    assert kinds.index("JobErrorReports") > kinds.index("Tracking")
    assert sum(isinstance(m, JobErrorReports) for m in actors.broker.middleware) == 1


def test_a_job_that_exhausts_its_retries_is_reported_once_with_its_attempts_as_breadcrumbs(
    actors: Actors, receiver: SentryReceiver
) -> None:
    job = submit(actors.flaky, kwargs={"times": 5}, tenant="acme", correlation_id="cid-1")

    [event] = _events_after_drain(actors, receiver, job.id)

    assert get_job(job.id).state == JobState.FAILED.value
    assert tags(event) | {"trace_id": "-"} == {
        "job_id": job.id,
        "actor": "t.flaky",
        "queue": "default",
        "attempt": "3",
        "tenant": "acme",
        "correlation_id": "cid-1",
        "trace_id": tags(event).get("trace_id", "-"),
    }
    assert event["exception"]["values"][-1]["value"] == "attempt 3 fails"
    crumbs = [
        c["message"] for c in event["breadcrumbs"]["values"] if c["category"] == "jobstack.retry"
    ]
    assert crumbs == [
        "Attempt 1 failed with RuntimeError: attempt 1 fails",
        "Attempt 2 failed with RuntimeError: attempt 2 fails",
    ]


def test_a_job_that_succeeds_on_a_retry_is_not_reported(
    actors: Actors, receiver: SentryReceiver
) -> None:
    job = submit(actors.flaky, kwargs={"times": 1})

    assert _events_after_drain(actors, receiver, job.id) == []
    assert get_job(job.id).state == JobState.SUCCEEDED.value


def test_a_permanent_error_is_reported_at_once(actors: Actors, receiver: SentryReceiver) -> None:
    job = submit(actors.broken)

    [event] = _events_after_drain(actors, receiver, job.id)
    assert (tags(event)["attempt"], tags(event)["tenant"]) == ("1", "default")
    assert event["exception"]["values"][-1]["type"] == "PermanentError"


def test_a_time_limit_on_the_last_attempt_is_reported(
    actors: Actors, receiver: SentryReceiver
) -> None:
    job = submit(actors.slow)

    [event] = _events_after_drain(actors, receiver, job.id)
    assert event["exception"]["values"][-1]["type"] == "TimeLimitExceeded"
    assert get_job(job.id).state == JobState.FAILED.value


def test_a_job_that_asks_for_retries_until_none_is_left_is_reported(
    actors: Actors, receiver: SentryReceiver
) -> None:
    job = submit(actors.retrying)

    [event] = _events_after_drain(actors, receiver, job.id)
    assert event["exception"]["values"][-1]["type"] == "Retry"
    assert tags(event)["attempt"] == "2"


def test_the_api_reports_an_unhandled_error_but_no_http_error(
    receiver: SentryReceiver, clean_db: str
) -> None:
    from api import create_app

    app = create_app({"TESTING": True, "PROPAGATE_EXCEPTIONS": False})

    def boom() -> str:
        raise RuntimeError("a bug in a view")

    app.add_url_rule("/boom", view_func=boom)
    client = app.test_client()
    assert client.get("/v1/jobs/nope").status_code == 401
    assert client.get("/v1/nowhere").status_code == 404
    assert client.get("/boom", headers={"X-Correlation-ID": "cid-api"}).status_code == 500
    sentry_sdk.flush(timeout=5)

    [event] = receiver.events
    assert event["exception"]["values"][-1]["value"] == "a bug in a view"
    assert tags(event)["correlation_id"] == "cid-api"


def test_the_trace_id_is_the_current_span_s_and_none_outside_of_a_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import format_trace_id

    assert current_trace_id() is None
    with TracerProvider().get_tracer(__name__).start_as_current_span("attempt") as span:
        assert current_trace_id() == format_trace_id(span.get_span_context().trace_id)
