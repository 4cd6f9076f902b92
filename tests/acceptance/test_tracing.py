"""One trace per job, from the API request to every attempt in a real worker, exported
over OTLP/HTTP to a receiver in the test process (the standard OTEL_* settings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import BIN, WorkerProcess, jobstack
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, print_trace
from tests.support.served_api import ServedApi
from tests.support.waiting import wait_until

#: A broker address where nothing listens: the API cannot publish.
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().running() as running:
        yield running


@pytest.fixture
def auth(clean_db: str) -> dict[str, str]:
    created = jobstack("tokens", "create", "--tenant", "acme", "--scopes", "jobs:read,jobs:write")
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip()}"}


@pytest.fixture
def serve(clean_db: str, tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ServedApi]]:
    served: list[ServedApi] = []

    def start(env: dict[str, str]) -> ServedApi:
        served.append(ServedApi(BIN, tmp_path / f"api-{len(served)}.log", env))
        return served[-1]

    yield start
    for api in served:
        api.stop()


@pytest.fixture
def traced_api(
    receiver: OtlpReceiver,
    serve: Callable[[dict[str, str]], ServedApi],
    start_worker: Callable[..., WorkerProcess],
) -> ServedApi:
    """A worker and the API, both sending their spans to ``receiver``."""
    start_worker(receiver.environment())
    return serve(receiver.environment())


def _attempts(count: int) -> Callable[[list[ReceivedSpan]], bool]:
    """Whether a trace holds ``count`` process spans."""
    return lambda spans: len([span for span in spans if span.kind == "CONSUMER"]) == count


def _submit(api: ServedApi, auth: dict[str, str], body: dict[str, Any], cid: str) -> str:
    status, _headers, job = api.call("POST", "/v1/jobs", body, {**auth, "X-Correlation-ID": cid})
    assert status == 202, job
    job_id: str = job["id"]
    return job_id


def _wait_for_state(api: ServedApi, auth: dict[str, str], job_id: str, state: str) -> Any:
    def reached() -> Any:
        body = api.call("GET", f"/v1/jobs/{job_id}", headers=auth)[2]
        return body if body["state"] == state else None

    return wait_until(reached, 60, f"job {job_id} to be {state}")


def _wait_for_trace(
    receiver: OtlpReceiver, job_id: str, ready: Callable[[list[ReceivedSpan]], bool]
) -> list[ReceivedSpan]:
    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.trace_of(job_id)
        return spans if spans and ready(spans) else None

    try:
        return wait_until(complete, 30, f"the trace of job {job_id}")
    except AssertionError:
        raise AssertionError(
            "incomplete trace:\n" + print_trace(receiver.trace_of(job_id))
        ) from None


def _only(spans: list[ReceivedSpan], kind: str, name: str) -> ReceivedSpan:
    found = [span for span in spans if span.kind == kind and span.name == name]
    assert len(found) == 1, f"{len(found)} {kind} spans {name!r} in:\n{print_trace(spans)}"
    return found[0]


def _messaging(span: ReceivedSpan, job_id: str, cid: str, actor: str) -> None:
    attributes = span.attributes
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == "default"
    assert attributes["messaging.message.id"] == job_id
    assert attributes["messaging.message.conversation_id"] == cid
    assert attributes["jobstack.actor"] == actor


def test_a_job_submitted_over_http_is_one_trace_from_the_request_to_the_worker(
    receiver: OtlpReceiver,
    serve: Callable[[dict[str, str]], ServedApi],
    auth: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = receiver.environment()
    worker = start_worker({**env, "JOBSTACK_LOG_FORMAT": "json"})
    api = serve(env)
    cid = "trace-one-9c1"
    job_id = _submit(api, auth, {"actor": "diagnostics.echo", "kwargs": {"value": 7}}, cid)
    _wait_for_state(api, auth, job_id, "succeeded")

    def has_all(spans: list[ReceivedSpan]) -> bool:
        kinds = {span.kind for span in spans}
        return {"SERVER", "PRODUCER", "CONSUMER"} <= kinds and len(
            [s for s in spans if s.kind == "PRODUCER"]
        ) >= 2

    spans = _wait_for_trace(receiver, job_id, has_all)
    print(print_trace(spans))  # The trace as the receiver got it (-s shows it).

    request = _only(spans, "SERVER", "POST /v1/jobs")
    create = _only(spans, "PRODUCER", "create default")
    send = _only(spans, "PRODUCER", "send default")
    process = _only(spans, "CONSUMER", "process default")
    assert len({span.trace_id for span in spans}) == 1
    assert (request.service, create.service, process.service) == (
        "jobstack-api",
        "jobstack-api",
        "jobstack-worker",
    )
    # The request's correlation id is on its span; submit's create span is its child;
    # the publish and the attempt both follow the job's creation context.
    assert request.attributes["jobstack.correlation_id"] == cid
    assert create.parent_id == request.span_id
    assert send.parent_id == create.span_id
    assert process.parent_id == create.span_id
    for span in (create, send, process):
        _messaging(span, job_id, cid, "diagnostics.echo")
    assert process.attributes["jobstack.attempt"] == 1
    assert process.status != "ERROR"
    # The API's SQL is traced under its request.
    sql = [span for span in spans if span.kind == "CLIENT" and span.service == "jobstack-api"]
    assert sql and all(span.parent_id in {request.span_id, create.span_id} for span in sql)

    # The worker's JSON log lines of this job lead to the trace.
    lines = [json.loads(line) for line in worker.log.read_text().splitlines() if line[:1] == "{"]
    finished = [
        line for line in lines if line["job_id"] == job_id and "succeeded after" in line["message"]
    ]
    assert finished and finished[0]["trace_id"] == process.trace_id
    assert finished[0]["span_id"] == process.span_id


def test_a_job_the_relay_publishes_later_continues_the_trace_of_its_submission(
    receiver: OtlpReceiver,
    serve: Callable[[dict[str, str]], ServedApi],
    auth: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = receiver.environment()
    # The API cannot reach RabbitMQ: the job is stored and left to the relay.
    api = serve({**env, "JOBSTACK_BROKER_URL": UNREACHABLE_BROKER})
    cid = "trace-relay-42"
    job_id = _submit(api, auth, {"actor": "diagnostics.echo", "kwargs": {"value": 1}}, cid)
    assert api.call("GET", f"/v1/jobs/{job_id}", headers=auth)[2]["state"] == "queued"

    start_worker({**env, "JOBSTACK_RELAY_GRACE": "1", "JOBSTACK_RELAY_INTERVAL": "0.2"})
    _wait_for_state(api, auth, job_id, "succeeded")

    def has_process(spans: list[ReceivedSpan]) -> bool:
        kinds = {span.kind for span in spans}
        return {"SERVER", "CONSUMER"} <= kinds and any(
            span.name == "send default" for span in spans
        )

    spans = _wait_for_trace(receiver, job_id, has_process)
    print(print_trace(spans))
    request = _only(spans, "SERVER", "POST /v1/jobs")
    create = _only(spans, "PRODUCER", "create default")
    assert create.parent_id == request.span_id
    send = _only(spans, "PRODUCER", "send default")
    process = _only(spans, "CONSUMER", "process default")
    assert create.service == "jobstack-api"
    # Published by the relay, in the worker process, as part of the same trace.
    assert send.service == "jobstack-worker"
    assert send.parent_id == create.span_id
    assert process.parent_id == create.span_id
    _messaging(process, job_id, cid, "diagnostics.echo")


def test_a_job_that_fails_once_has_two_process_spans_in_one_trace(
    receiver: OtlpReceiver, traced_api: ServedApi, auth: dict[str, str]
) -> None:
    api = traced_api
    job_id = _submit(api, auth, {"actor": "diagnostics.fail", "kwargs": {"times": 1}}, "two-tries")
    _wait_for_state(api, auth, job_id, "succeeded")

    spans = _wait_for_trace(receiver, job_id, _attempts(2))
    print(print_trace(spans))
    create = _only(spans, "PRODUCER", "create default")
    attempts = sorted(
        (span for span in spans if span.kind == "CONSUMER"),
        key=lambda span: span.attributes["jobstack.attempt"],
    )
    assert [span.attributes["jobstack.attempt"] for span in attempts] == [1, 2]
    # Both attempts continue the creation context: the retry did not start a new trace.
    assert {span.parent_id for span in attempts} == {create.span_id}
    first, second = attempts
    assert first.status == "ERROR" and first.attributes["error.type"] == "RuntimeError"
    assert "exception" in first.events and first.attributes["jobstack.failed_for_good"] is False
    assert second.status != "ERROR"
    # The retry was sent twice by Dramatiq (to default.DQ, then default), each a send span
    # of the same trace.
    sends = [span for span in spans if span.name == "send default"]
    assert len(sends) == 3 and {span.parent_id for span in sends} == {create.span_id}


def test_a_delayed_job_and_a_job_retried_by_hand_continue_the_trace_of_their_submission(
    receiver: OtlpReceiver, traced_api: ServedApi, auth: dict[str, str]
) -> None:
    api = traced_api
    # Published by the relay when due, from the row.
    delayed = _submit(
        api, auth, {"actor": "diagnostics.echo", "kwargs": {"value": 2}, "delay_ms": 1500}, "later"
    )
    # Fails for good on attempt 1; retried by hand, attempt 2 succeeds.
    failing = _submit(
        api,
        auth,
        {"actor": "diagnostics.fail", "kwargs": {"times": 1}, "max_retries": 0},
        "by-hand",
    )
    _wait_for_state(api, auth, failing, "failed")
    status, _headers, body = api.call("POST", f"/v1/jobs/{failing}/retry", headers=auth)
    assert status == 202, body
    _wait_for_state(api, auth, failing, "succeeded")
    _wait_for_state(api, auth, delayed, "succeeded")

    spans = _wait_for_trace(receiver, delayed, _attempts(1))
    create = _only(spans, "PRODUCER", "create default")
    process = _only(spans, "CONSUMER", "process default")
    assert process.parent_id == create.span_id
    # Held in the database until due, then published by the relay in the worker.
    send = _only(spans, "PRODUCER", "send default")
    assert send.service == "jobstack-worker" and send.parent_id == create.span_id

    spans = _wait_for_trace(receiver, failing, _attempts(2))
    print(print_trace(spans))
    create = _only(spans, "PRODUCER", "create default")
    attempts = [span for span in spans if span.kind == "CONSUMER"]
    assert {span.parent_id for span in attempts} == {create.span_id}
    assert sorted(span.attributes["jobstack.attempt"] for span in attempts) == [1, 2]
    failed = next(span for span in attempts if span.attributes["jobstack.attempt"] == 1)
    assert failed.attributes["jobstack.failed_for_good"] is True
