"""Actors, queues, health and the worker-compatible endpoints, on real servers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state, wait_until

ECHO = {"actor": "diagnostics.echo", "kwargs": {"value": 1}}


def test_actors_lists_public_actors_with_schema_queue_and_retry_policy(
    client: FlaskClient, tokens: Tokens
) -> None:
    actors = {a["name"]: a for a in client.get("/v1/actors", headers=tokens.reader).get_json()}

    assert {"diagnostics.echo", "diagnostics.sleep", "diagnostics.fail", "diagnostics.noop"} <= set(
        actors
    )
    assert "tests.counted" not in actors  # not public
    sleep = actors["diagnostics.sleep"]
    assert sleep["queue"] == "default"
    assert (sleep["max_retries"], sleep["time_limit_ms"]) == (3, 600_000)
    assert sleep["kwargs_schema"]["properties"]["seconds"]["type"] == "number"
    assert sleep["kwargs_schema"]["required"] == ["seconds"]
    assert actors["diagnostics.fail"]["min_backoff_ms"] == 200


def test_queues_reports_ready_dead_letter_and_consumer_counts(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    for _ in range(2):
        client.post("/v1/jobs", json=ECHO, headers=tokens.acme)

    queues = {q["name"]: q for q in client.get("/v1/queues", headers=tokens.reader).get_json()}
    assert queues["default"] == {
        "name": "default",
        "ready": 2,
        "delayed": 0,
        "dead_letter": 0,
        "consumers": 0,
    }


def test_healthz_needs_no_token_and_readyz_checks_both_servers(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_readyz_is_503_and_names_the_broker_when_rabbitmq_is_unreachable(
    client: FlaskClient, rabbit: RabbitmqBroker
) -> None:
    reachable = rabbit.parameters
    rabbit.parameters = pika.URLParameters("amqp://guest:guest@127.0.0.1:1/%2F")
    del rabbit.connection
    try:
        response = client.get("/readyz")
    finally:
        rabbit.parameters = reachable
        del rabbit.connection

    assert response.status_code == 503
    body = response.get_json()
    assert body["message"] == "unavailable: broker"
    assert set(body["errors"]) == {"broker"}


def test_worker_health_and_task_status_follow_a_real_worker(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    job_id = client.post("/v1/jobs", json=ECHO, headers=tokens.acme).get_json()["id"]
    wait_for_state(job_id)

    def reported() -> Any:
        health = client.get("/v1/worker/health", headers=tokens.admin).get_json()
        return health if health["processed"] == 1 else None

    health = wait_until(reported, 5, "the heartbeat after the job")
    assert (health["available"], health["workers"], health["active"]) == (True, 1, 0)

    task = client.get(f"/v1/worker/tasks/{job_id}", headers=tokens.acme).get_json()
    assert task == {
        "task_id": job_id,
        "status": "SUCCESS",
        "state": "succeeded",
        "result": 1,
        "error": None,
    }


def test_worker_health_without_workers_reports_unavailable(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    health = client.get("/v1/worker/health", headers=tokens.admin).get_json()
    assert (health["status"], health["available"], health["workers"]) == ("unavailable", False, 0)


def test_with_the_database_down_requests_get_503_and_readyz_names_it(
    client: FlaskClient, tokens: Tokens, database_url: str
) -> None:
    from app import db

    db.configure("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        ready = client.get("/readyz")
        listing = client.get("/v1/jobs", headers=tokens.acme)
    finally:
        db.configure(database_url)

    assert ready.status_code == 503 and set(ready.get_json()["errors"]) == {"database"}
    assert listing.status_code == 503
    assert listing.get_json()["message"] == "the job database is unavailable; try again shortly"


def test_the_worker_registry_shows_running_jobs_counts_and_status(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    from sqlalchemy import update

    from app import db
    from app.models import Worker
    from app.timeutil import utcnow
    from tests.support.workers import running_worker

    assert client.get("/v1/workers", headers=tokens.acme).status_code == 403
    with running_worker(rabbit, threads=2):
        body = {"actor": "diagnostics.sleep", "kwargs": {"seconds": 1.5}}
        job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]

        def running() -> Any:
            workers = client.get("/v1/workers", headers=tokens.admin).get_json()
            return workers if workers and job_id in workers[0]["running_job_ids"] else None

        [worker] = wait_until(running, 5, "the job in the worker's heartbeat")
        assert worker["status"] == "alive"
        assert {"critical", "default", "low"} <= set(worker["queues"])
        wait_for_state(job_id)

    [stopped] = client.get("/v1/workers", headers=tokens.admin).get_json()
    assert (stopped["status"], stopped["processed"], stopped["running_job_ids"]) == (
        "stopped",
        1,
        [],
    )

    with db.session_scope() as session:
        session.execute(
            update(Worker).values(stopped_at=None, last_seen=utcnow() - timedelta(seconds=61))
        )
    [silent] = client.get("/v1/workers", headers=tokens.admin).get_json()
    assert silent["status"] == "gone"
