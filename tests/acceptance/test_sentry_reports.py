"""Sentry, seen from outside: real ``dramatiq`` workers and the served API send their
events to a local stand-in for Sentry; a job that fails for good is one event, a job that
succeeds on a retry none."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs import get_job, submit
from app.tokens import create_token
from tests.acceptance.conftest import BIN, WorkerProcess
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.sentry_receiver import SentryReceiver, tags
from tests.support.served_api import ServedApi
from tests.support.waiting import wait_for_state, wait_until

KILLER = "tests.support.killer_actors"


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with SentryReceiver() as receiver:
        yield receiver


@pytest.fixture
def served(clean_db: str, tmp_path: Path, receiver: SentryReceiver) -> Iterator[ServedApi]:
    served = ServedApi(BIN, tmp_path / "api.log", {"SENTRY_DSN": receiver.dsn})
    yield served
    served.stop()


def _submit(served: ServedApi, token: str, body: dict[str, Any], correlation_id: str) -> str:
    headers = {"Authorization": f"Bearer {token}", "X-Correlation-ID": correlation_id}
    status, _, job = served.call("POST", "/v1/jobs", body, headers)
    assert status == 202, job
    return str(job["id"])


def test_a_job_that_fails_after_two_retries_is_one_event_and_one_that_recovers_is_none(
    start_worker: Callable[..., WorkerProcess], served: ServedApi, receiver: SentryReceiver
) -> None:
    worker = start_worker(env={"SENTRY_DSN": receiver.dsn})
    token = create_token("acme", {"jobs:write"})
    failing = _submit(
        served,
        token,
        {"actor": "diagnostics.fail", "kwargs": {"times": 5}, "max_retries": 2},
        "sentry-failing",
    )
    recovering = _submit(
        served,
        token,
        {"actor": "diagnostics.fail", "kwargs": {"times": 1}, "max_retries": 2},
        "sentry-recovering",
    )
    # An HTTP error raised on purpose is no event of the API's.
    status, _, _ = served.call("POST", "/v1/jobs", {"actor": "no.such"}, {"X-Foo": "1"})
    assert status == 401

    assert (wait_for_state(failing, timeout=30).state, get_job(failing).attempts) == ("failed", 3)
    assert wait_for_state(recovering, timeout=30).state == "succeeded"
    assert get_job(recovering).attempts == 2
    wait_until(lambda: receiver.events_of(failing), 15, "the failed job's event")
    # Sentry flushes what it still holds when the worker exits: reports of the earlier
    # attempts, had there been any, have all arrived after this.
    worker.stop()

    [event] = receiver.events_of(failing)
    print("tags of the event:", tags(event))
    assert tags(event) | {"trace_id": "-"} == {
        "job_id": failing,
        "actor": "diagnostics.fail",
        "queue": "default",
        "attempt": "3",
        "tenant": "acme",
        "correlation_id": "sentry-failing",
        "trace_id": tags(event).get("trace_id", "-"),
    }
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    crumbs = [
        c["message"] for c in event["breadcrumbs"]["values"] if c["category"] == "jobstack.retry"
    ]
    assert [crumb.split(":")[0] for crumb in crumbs] == [
        "Attempt 1 failed with RuntimeError",
        "Attempt 2 failed with RuntimeError",
    ]
    assert receiver.events_of(recovering) == []
    assert receiver.events == [event]  # Nothing else either: not the API's 401.


def test_a_poison_message_is_one_event_sent_when_it_is_dead_lettered(
    start_worker: Callable[..., WorkerProcess], receiver: SentryReceiver
) -> None:
    from tests.support import killer_actors

    env = {"SENTRY_DSN": receiver.dsn}
    job = submit(killer_actors.killer, correlation_id="sentry-poison")
    for death in range(1, 4):
        start_worker(env=env, modules=(KILLER,)).process.wait(30)  # The job kills it.
        assert get_job(job.id).attempts == death

    last = start_worker(env=env, modules=(KILLER,))
    assert wait_for_state(job.id, timeout=20).error_type == "PoisonMessage"
    wait_until(lambda: receiver.events_of(job.id), 15, "the poison job's event")
    last.stop()

    [event] = receiver.events_of(job.id)
    print("tags of the event:", tags(event))
    assert "poison" in event["message"]
    assert {key: tags(event)[key] for key in ("actor", "attempt", "tenant", "correlation_id")} == {
        "actor": "tests.killer",
        "attempt": "3",
        "tenant": "default",
        "correlation_id": "sentry-poison",
    }


def test_with_tracing_on_the_event_names_the_trace_of_its_job(
    start_worker: Callable[..., WorkerProcess],
    clean_db: str,
    tmp_path: Path,
    receiver: SentryReceiver,
) -> None:
    with OtlpReceiver().running() as traces:
        env = {"SENTRY_DSN": receiver.dsn, **traces.environment()}
        worker = start_worker(env=env)
        api = ServedApi(BIN, tmp_path / "api-traced.log", env)
        try:
            token = create_token("acme", {"jobs:write"})
            body = {"actor": "diagnostics.fail", "kwargs": {"times": 5}, "max_retries": 0}
            failing = _submit(api, token, body, "sentry-traced")
            assert wait_for_state(failing, timeout=30).state == "failed"
            wait_until(lambda: receiver.events_of(failing), 15, "the failed job's event")
            # Each process exports its spans on its own schedule: wait for all three.
            wanted = {"POST /v1/jobs", "create default", "process default"}

            def whole_trace() -> list[ReceivedSpan] | None:
                found = traces.trace_of(failing)
                return found if wanted <= {span.name for span in found} else None

            spans = wait_until(whole_trace, 15, "the job's trace from the request to the attempt")
        finally:
            worker.stop()
            api.stop()

    [event] = receiver.events_of(failing)
    # The event leads to the job's trace: the API request, its creation, the attempt.
    assert tags(event)["trace_id"] == spans[0].trace_id
    assert {span.name for span in spans} >= wanted
