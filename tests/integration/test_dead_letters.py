"""Re-driving dead letters on real RabbitMQ, through the API and the CLI's core."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from app.jobs import get_job, list_events, submit
from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state, wait_until


def _dead(rabbit: RabbitmqBroker) -> int:
    return rabbit.get_queue_message_counts("default")[2]


def _fail_once(rabbit: RabbitmqBroker) -> str:
    """A job that fails its only attempt (and would succeed on the next)."""
    job = submit("diagnostics.fail", kwargs={"times": 1}, max_retries=0)
    assert wait_for_state(job.id).state == "failed"
    wait_until(lambda: _dead(rabbit) == 1, 5, "the dead letter")
    return job.id


def test_a_dry_run_lists_and_a_redrive_requeues_the_failed_job(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job_id = _fail_once(rabbit)

    listed = client.get("/v1/dead-letters", headers=tokens.admin).get_json()
    assert [(i["job_id"], i["error_type"]) for i in listed["items"]] == [(job_id, "RuntimeError")]
    dry = client.post("/v1/dead-letters/redrive", json={"dry_run": True}, headers=tokens.admin)
    assert dry.get_json()["count"] == 1
    assert _dead(rabbit) == 1 and get_job(job_id).state == "failed"

    done = client.post(
        "/v1/dead-letters/redrive", json={"actor": "diagnostics.fail"}, headers=tokens.admin
    ).get_json()
    assert (done["dry_run"], done["count"]) == (False, 1)
    finished = wait_for_state(job_id, timeout=15)
    assert (finished.state, finished.attempts, finished.result) == ("succeeded", 2, 2)
    assert "retry_requested" in [e.kind for e in list_events(job_id)]
    assert _dead(rabbit) == 0


def test_a_filter_that_matches_nothing_leaves_the_dead_letters_alone(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job_id = _fail_once(rabbit)

    for body in ({"actor": "diagnostics.echo"}, {"error_type": "KeyError"}, {"queue": "low"}):
        result = client.post("/v1/dead-letters/redrive", json=body, headers=tokens.admin).get_json()
        assert result["count"] == 0, body
    assert _dead(rabbit) == 1
    assert get_job(job_id).state == "failed"


def test_only_admins_may_redrive(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post("/v1/dead-letters/redrive", json={}, headers=tokens.acme)
    assert response.status_code == 403
