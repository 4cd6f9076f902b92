"""The API under gunicorn (``jobstack api``), a token from ``jobstack tokens create``, and a
real worker whose JSON log lines carry the request's correlation id."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import BIN, WorkerProcess, jobstack
from tests.support.served_api import ServedApi
from tests.support.waiting import wait_until


@pytest.fixture
def api_server(clean_db: str, tmp_path: Path) -> Iterator[ServedApi]:
    served = ServedApi(BIN, tmp_path / "api.log")
    yield served
    served.stop()


def test_a_job_submitted_over_http_runs_and_its_worker_logs_carry_the_correlation_id(
    api_server: ServedApi, start_worker: Callable[..., WorkerProcess]
) -> None:
    created = jobstack("tokens", "create", "--tenant", "acme", "--scopes", "jobs:read,jobs:write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("jst_")
    auth = {"Authorization": f"Bearer {token}"}
    worker = start_worker({"JOBSTACK_LOG_FORMAT": "json"})

    status, headers, job = api_server.call(
        "POST",
        "/v1/jobs",
        {"actor": "diagnostics.fail", "kwargs": {"times": 1}},
        {**auth, "X-Correlation-ID": "trace-7f3a"},
    )
    assert status == 202, job
    assert headers["X-Correlation-ID"] == "trace-7f3a"

    def finished() -> Any:
        body = api_server.call("GET", f"/v1/jobs/{job['id']}", headers=auth)[2]
        return body if body["state"] == "succeeded" else None

    done = wait_until(finished, 30, "the job to succeed")
    assert (done["attempts"], done["correlation_id"]) == (2, "trace-7f3a")

    lines = [
        json.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")
    ]
    of_job = [line for line in lines if line["job_id"] == job["id"]]
    messages = [line["message"] for line in of_job]
    assert any("Failed to process message" in m for m in messages)
    assert any("(diagnostics.fail) retrying after attempt 1 in" in m for m in messages)
    assert any("(diagnostics.fail) succeeded after attempt 2 in" in m for m in messages)
    assert {line["correlation_id"] for line in of_job} == {"trace-7f3a"}

    access = [json.loads(line) for line in api_server.log.read_text().splitlines()]
    posted = [line for line in access if '"POST /v1/jobs HTTP/1.1" 202' in line["message"]]
    assert posted and posted[0]["message"].endswith("correlation_id=trace-7f3a")


def test_the_served_api_rejects_a_missing_token_and_serves_its_openapi_document(
    api_server: ServedApi,
) -> None:
    status, headers, body = api_server.call("GET", "/v1/jobs")
    assert status == 401 and body["code"] == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, spec = api_server.call("GET", "/openapi.json")
    assert status == 200 and "/v1/jobs/{job_id}/events" in spec["paths"]


def test_tokens_create_refuses_unknown_scopes(clean_db: str) -> None:
    refused = jobstack("tokens", "create", "--tenant", "acme", "--scopes", "jobs:read,root")
    assert refused.returncode == 1
    assert "unknown: ['root']" in refused.stderr
