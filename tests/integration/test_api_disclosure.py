"""What tenants and anonymous callers may learn: their jobs' errors, not the platform's insides."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from api import create_app
from api.limits import LISTED_VALUE_MAX_CHARS
from app import db
from app.models import Job
from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state

FAILING = {"actor": "diagnostics.fail", "kwargs": {"times": 1}, "max_retries": 0}
INTERNALS = ("error_traceback", "worker_id")


@pytest.fixture
def failed_job(client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker) -> str:
    """A job of tenant acme that failed on a real worker, submitted under key ``k1``."""
    headers = {**tokens.acme, "Idempotency-Key": "k1"}
    job_id: str = client.post("/v1/jobs", json=FAILING, headers=headers).get_json()["id"]
    failed = wait_for_state(job_id)
    assert failed.state == "failed" and failed.error_traceback and failed.worker_id
    return job_id


def test_tenants_see_a_failed_jobs_error_but_not_its_traceback_or_worker(
    client: FlaskClient, tokens: Tokens, failed_job: str
) -> None:
    replay_headers = {**tokens.acme, "Idempotency-Key": "k1"}
    seen_by_tenant = [
        client.get(f"/v1/jobs/{failed_job}", headers=tokens.acme).get_json(),
        client.get("/v1/jobs", headers=tokens.acme).get_json()["items"][0],
        client.post("/v1/jobs", json=FAILING, headers=replay_headers).get_json(),
    ]
    for job in seen_by_tenant:
        assert job["id"] == failed_job
        assert (job["error_type"], job["error_message"]) == (
            "RuntimeError",
            "diagnostics.fail: attempt 1 fails (1 planned)",
        )
        assert not set(INTERNALS) & set(job), job

    seen_by_admin = [
        client.get(f"/v1/jobs/{failed_job}", headers=tokens.admin).get_json(),
        client.get("/v1/jobs", headers=tokens.admin).get_json()["items"][0],
    ]
    for job in seen_by_admin:
        assert "Traceback (most recent call last)" in job["error_traceback"]
        assert job["worker_id"].rsplit(":", 1)[1].isdigit()  # hostname:pid


def test_the_worker_endpoints_tell_tenants_only_whether_jobs_can_run(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    tenant = client.get("/v1/worker/health", headers=tokens.acme)
    assert tenant.status_code == 200
    assert set(tenant.get_json()) == {"status", "available"}
    admin = client.get("/v1/worker/health", headers=tokens.admin).get_json()
    assert {"workers", "active", "processed"} <= set(admin)
    assert client.get("/v1/workers", headers=tokens.acme).status_code == 403


def test_health_history_is_for_admins_only(client: FlaskClient, tokens: Tokens) -> None:
    for headers in (tokens.acme, tokens.reader):
        response = client.get("/v1/health/history", headers=headers)
        assert response.status_code == 403
        assert response.get_json()["message"] == "this token lacks the 'admin' scope"
    assert client.get("/v1/health/history", headers=tokens.admin).status_code == 200


def _not_in(response: Any, *secrets: str) -> None:
    text = response.get_data(as_text=True)
    for secret in secrets:
        assert secret not in text, text


def test_readyz_names_the_unreachable_database_and_logs_the_detail(
    client: FlaskClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db.configure("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with caplog.at_level(logging.ERROR, logger="api.health"):
            ready = client.get("/readyz")
    finally:
        db.configure(database_url)

    assert ready.status_code == 503
    assert ready.get_json()["message"] == "unavailable: database"
    assert ready.get_json()["errors"] == {"database": "unreachable"}
    _not_in(ready, "127.0.0.1", "nobody", "OperationalError")
    assert "127.0.0.1" in caplog.text and "database" in caplog.text


def test_readyz_names_the_unreachable_broker_and_logs_the_detail(
    client: FlaskClient, rabbit: RabbitmqBroker, caplog: pytest.LogCaptureFixture
) -> None:
    reachable = rabbit.parameters
    rabbit.parameters = pika.URLParameters("amqp://guest:guest@127.0.0.1:1/%2F")
    del rabbit.connection
    try:
        with caplog.at_level(logging.ERROR, logger="api.health"):
            ready = client.get("/readyz")
    finally:
        rabbit.parameters = reachable
        del rabbit.connection

    assert ready.status_code == 503
    assert ready.get_json()["errors"] == {"broker": "unreachable"}
    _not_in(ready, "127.0.0.1", "AMQP", "Error")
    assert "broker" in caplog.text and "unreachable" in caplog.text


def test_server_errors_do_not_echo_the_exception(
    rabbit: RabbitmqBroker, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.jobs

    secret = "postgresql://jobstack:hunter2@db.internal:5432"
    client = create_app({"PROPAGATE_EXCEPTIONS": False}).test_client()

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError(secret)

    monkeypatch.setattr(api.jobs, "get_job", broken)
    crashed = client.get("/v1/jobs/anything", headers=tokens.acme)
    assert crashed.status_code == 500
    assert crashed.get_json()["message"] == "internal error; it has been logged"
    _not_in(crashed, "hunter2", "db.internal", "RuntimeError")

    def database_down(*_: Any, **__: Any) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError(secret))

    monkeypatch.setattr(api.jobs, "get_job", database_down)
    down = client.get("/v1/jobs/anything", headers=tokens.acme)
    assert down.status_code == 503
    _not_in(down, "hunter2", "db.internal", "SELECT")


def test_a_job_listing_does_not_tell_tenants_of_a_long_traceback(
    client: FlaskClient, tokens: Tokens
) -> None:
    job_id = client.post("/v1/jobs", json=FAILING, headers=tokens.acme).get_json()["id"]
    with db.session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(error_traceback="x" * (LISTED_VALUE_MAX_CHARS + 1), worker_id="host:1")
        )

    [listed] = client.get("/v1/jobs", headers=tokens.acme).get_json()["items"]
    assert not {"truncated", *INTERNALS} & set(listed), listed
    [seen_by_admin] = client.get("/v1/jobs", headers=tokens.admin).get_json()["items"]
    assert seen_by_admin["truncated"] == {"error_traceback": LISTED_VALUE_MAX_CHARS + 1}
    assert seen_by_admin["worker_id"] == "host:1"
