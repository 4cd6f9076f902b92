"""/v1/jobs against the real database and RabbitMQ: submit, read, list, cancel, retry."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import db
from app.jobs import get_job
from app.models import Job
from tests.integration.conftest import Tokens

ECHO = {"actor": "diagnostics.echo", "kwargs": {"value": 7}}


def _submit(client: FlaskClient, headers: dict[str, str], body: Any = None) -> Any:
    return client.post("/v1/jobs", json=ECHO if body is None else body, headers=headers)


def _ready(broker: RabbitmqBroker) -> int:
    return broker.get_queue_message_counts("default")[0]


def test_post_stores_and_queues_a_job_and_returns_202_with_location(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    response = _submit(client, {**tokens.acme, "X-Correlation-ID": "req-42"})

    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"].endswith(f"/v1/jobs/{job['id']}")
    assert response.headers["X-Correlation-ID"] == "req-42"
    assert (job["state"], job["actor"], job["kwargs"]) == (
        "queued",
        "diagnostics.echo",
        {"value": 7},
    )
    stored = get_job(job["id"])
    assert (stored.tenant, stored.correlation_id) == ("acme", "req-42")
    assert _ready(rabbit) == 1


def test_a_correlation_id_is_made_up_when_none_or_a_bad_one_is_sent(
    client: FlaskClient, tokens: Tokens
) -> None:
    response = _submit(client, {**tokens.acme, "X-Correlation-ID": "x" * 200})
    generated = response.headers["X-Correlation-ID"]
    assert len(generated) == 32
    assert get_job(response.get_json()["id"]).correlation_id == generated


def test_options_reach_the_job(client: FlaskClient, tokens: Tokens) -> None:
    body = {
        **ECHO,
        "priority": 7,
        "max_retries": 1,
        "delay_ms": 60_000,
        "callback_url": "https://example.com/hook",
    }
    job = _submit(client, tokens.acme, body).get_json()

    assert (job["state"], job["priority"], job["max_retries"]) == ("scheduled", 7, 1)
    assert job["callback_url"] == "https://example.com/hook"
    assert job["run_at"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ECHO, "state": "succeeded"}, "state"),
        ({**ECHO, "tenant": "globex"}, "tenant"),
        ({**ECHO, "attempts": 0}, "attempts"),
        ({**ECHO, "result": 1}, "result"),
        ({**ECHO, "priority": 10}, "priority"),
        ({**ECHO, "delay_ms": 5, "run_at": "2030-01-01T00:00:00+00:00"}, "delay_ms"),
        ({**ECHO, "run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({**ECHO, "callback_url": "ftp://example.com"}, "callback_url"),
        ({"kwargs": {}}, "actor"),
        ({"actor": "diagnostics.nope"}, "actor"),
        ({"actor": "tests.counted"}, "actor"),
        ({"actor": "diagnostics.echo", "kwargs": {}}, "kwargs"),
        ({"actor": "diagnostics.sleep", "kwargs": {"seconds": "long"}}, "kwargs"),
    ],
)
def test_invalid_bodies_get_422_naming_the_field_and_store_nothing(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker, body: dict[str, Any], field: str
) -> None:
    response = _submit(client, tokens.acme, body)

    assert response.status_code == 422
    error = response.get_json()
    assert (error["code"], error["status"]) == (422, "Unprocessable Entity")
    assert field in error["errors"]["json"]
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert _ready(rabbit) == 0


def test_non_json_malformed_and_oversized_bodies_are_refused(
    tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    from api import create_app

    client = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 200}).test_client()
    form = client.post(
        "/v1/jobs", data="actor=x", headers={**tokens.acme, "Content-Type": "text/plain"}
    )
    assert form.status_code == 415 and form.get_json()["code"] == 415

    broken = client.post(
        "/v1/jobs", data="{not json", headers={**tokens.acme, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and broken.get_json()["status"] == "Bad Request"

    huge = client.post(
        "/v1/jobs", json={**ECHO, "kwargs": {"value": "x" * 500}}, headers=tokens.acme
    )
    assert huge.status_code == 413
    assert set(huge.get_json()) == {"code", "status", "message", "errors"}


def test_requests_without_a_valid_token_get_401_and_missing_scope_403(
    client: FlaskClient, tokens: Tokens
) -> None:
    anonymous = client.get("/v1/jobs")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer jst_nope"}).status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401

    read_only = _submit(client, tokens.reader)
    assert read_only.status_code == 403
    assert "jobs:write" in read_only.get_json()["message"]
    assert client.get("/v1/jobs", headers=tokens.reader).status_code == 200


def test_another_tenants_job_is_not_found_and_admins_see_every_tenant(
    client: FlaskClient, tokens: Tokens
) -> None:
    job_id = _submit(client, tokens.acme).get_json()["id"]

    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events", f"/v1/worker/tasks/{job_id}"):
        other = client.get(path, headers=tokens.globex)
        assert other.status_code == 404, path
        assert other.get_json()["message"] == f"no job with id {job_id}"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=tokens.globex).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/retry", headers=tokens.globex).status_code == 404
    assert client.get("/v1/jobs", headers=tokens.globex).get_json()["items"] == []

    assert client.get(f"/v1/jobs/{job_id}", headers=tokens.admin).status_code == 200
    assert [j["id"] for j in client.get("/v1/jobs", headers=tokens.admin).get_json()["items"]] == [
        job_id
    ]


def test_an_idempotency_key_replays_the_same_job_and_conflicts_on_another_body(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    headers = {**tokens.acme, "Idempotency-Key": "order-1"}
    first = _submit(client, headers)
    again = _submit(client, headers)

    assert again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _ready(rabbit) == 1

    other = _submit(client, headers, {"actor": "diagnostics.echo", "kwargs": {"value": 8}})
    assert other.status_code == 409
    assert "order-1" in other.get_json()["message"]

    # Keys are per tenant: another tenant may use the same key.
    elsewhere = _submit(client, {**tokens.globex, "Idempotency-Key": "order-1"})
    assert elsewhere.status_code == 202 and elsewhere.get_json()["id"] != first.get_json()["id"]


def test_concurrent_requests_with_one_idempotency_key_create_one_job(
    client: FlaskClient, tokens: Tokens
) -> None:
    headers = {**tokens.acme, "Idempotency-Key": "race"}
    ids: list[str] = []
    barrier = threading.Barrier(4)

    def post() -> None:
        local = client.application.test_client()
        barrier.wait()
        response = _submit(local, headers)
        assert response.status_code == 202
        ids.append(response.get_json()["id"])

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == 4 and len(set(ids)) == 1
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_a_batch_is_stored_in_one_transaction(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    jobs = [{"actor": "diagnostics.echo", "kwargs": {"value": n}} for n in range(3)]
    response = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=tokens.acme)

    assert response.status_code == 202
    ids = response.get_json()["ids"]
    assert [get_job(i).kwargs["value"] for i in ids] == [0, 1, 2]
    assert _ready(rabbit) == 3


def test_a_batch_with_one_bad_job_stores_none(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    jobs = [ECHO, {"actor": "diagnostics.sleep", "kwargs": {"seconds": -1}}]
    response = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=tokens.acme)

    assert response.status_code == 422
    assert "1" in response.get_json()["errors"]["json"]["jobs"]
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    too_many = client.post("/v1/jobs/batch", json={"jobs": [ECHO] * 1001}, headers=tokens.acme)
    assert too_many.status_code == 422


def test_the_list_pages_with_an_opaque_cursor_and_filters(
    client: FlaskClient, tokens: Tokens
) -> None:
    ids = [_submit(client, tokens.acme).get_json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=tokens.acme)

    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=tokens.acme).get_json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))

    cancelled = client.get("/v1/jobs?state=cancelled", headers=tokens.acme).get_json()["items"]
    assert [job["id"] for job in cancelled] == [ids[0]]
    assert (
        client.get("/v1/jobs?actor=diagnostics.sleep", headers=tokens.acme).get_json()["items"]
        == []
    )
    assert client.get("/v1/jobs?cursor=bogus", headers=tokens.acme).status_code == 422
    assert client.get("/v1/jobs?limit=501", headers=tokens.acme).status_code == 422
    assert client.get("/v1/jobs?state=done", headers=tokens.acme).status_code == 422


def test_cancel_then_retry_requeues_and_republishes(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    job_id = _submit(client, tokens.acme).get_json()["id"]

    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=tokens.acme)
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=tokens.acme)
    assert again.status_code == 409 and "cancelled" in again.get_json()["message"]

    retried = client.post(f"/v1/jobs/{job_id}/retry", headers=tokens.acme)
    assert retried.status_code == 202 and retried.get_json()["state"] == "queued"
    assert _ready(rabbit) == 2  # the cancelled job's message and the retry's
    assert client.post(f"/v1/jobs/{job_id}/retry", headers=tokens.acme).status_code == 409


def test_unknown_routes_and_methods_get_the_error_shape(
    client: FlaskClient, tokens: Tokens
) -> None:
    missing = client.get("/v1/nothing", headers=tokens.acme)
    assert missing.status_code == 404
    assert set(missing.get_json()) == {"code", "status", "message", "errors"}
    wrong = client.delete("/v1/jobs", headers=tokens.acme)
    assert wrong.status_code == 405 and wrong.get_json()["status"] == "Method Not Allowed"
    assert client.get("/v1/jobs/nope", headers=tokens.acme).get_json()["code"] == 404
