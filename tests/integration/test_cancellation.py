"""Cancelling running jobs on real RabbitMQ: cooperatively, by force, and by the fallback."""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from app.jobs import get_job, list_events, submit
from app.middleware.cancellation import Cancellation
from app.operations import control
from app.states import JobState
from tests.integration import test_actors
from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state
from tests.support.workers import running_worker

#: The guarantee: a running job stops within this many seconds of its cancellation.
CANCEL_WITHIN = 2.0


def _cancel_running(actor: dramatiq.Actor, broker: RabbitmqBroker) -> tuple[str, float]:  # type: ignore[type-arg]
    job = submit(actor, kwargs={"seconds": 30})
    wait_for_state(job.id, {JobState.RUNNING}, timeout=10)
    assert control.cancel(job.id).state == "running"  # requested; the worker stops it
    done = wait_for_state(job.id, timeout=10)
    # From the request to the stop, both as recorded: the test's own polling is not counted.
    assert done.finished_at is not None and done.cancel_requested_at is not None
    return done.id, (done.finished_at - done.cancel_requested_at).total_seconds()


def _assert_cancelled(rabbit: RabbitmqBroker, job_id: str, elapsed: float, reason: str) -> None:
    job = get_job(job_id)
    assert job.state == "cancelled"
    assert elapsed < CANCEL_WITHIN, f"took {elapsed:.2f}s"
    assert job.attempts == 1  # not retried
    assert list_events(job_id)[-1].data == {"reason": reason}
    time.sleep(0.3)
    assert rabbit.get_queue_message_counts("default") == (0, 0, 0)  # not dead-lettered


def test_a_job_that_checks_stops_at_its_checkpoint(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job_id, elapsed = _cancel_running(test_actors.cooperative, rabbit)
    _assert_cancelled(rabbit, job_id, elapsed, "cooperative")


def test_a_job_that_never_checks_is_interrupted_after_the_grace(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job_id, elapsed = _cancel_running(test_actors.stubborn, rabbit)
    _assert_cancelled(rabbit, job_id, elapsed, "forced")


def test_without_the_broadcast_the_database_flag_still_stops_the_job(
    rabbit: RabbitmqBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancellation = next(m for m in rabbit.middleware if isinstance(m, Cancellation))
    monkeypatch.setattr(cancellation, "broadcast", False)  # as JOBSTACK_CANCEL_BROADCAST=false
    with running_worker(rabbit):
        job_id, elapsed = _cancel_running(test_actors.cooperative, rabbit)
    _assert_cancelled(rabbit, job_id, elapsed, "cooperative")


def test_cancelling_a_running_job_over_the_api_answers_202(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    body = {"actor": "diagnostics.sleep", "kwargs": {"seconds": 30}}
    job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]
    wait_for_state(job_id, {JobState.RUNNING}, timeout=10)

    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=tokens.acme)
    assert response.status_code == 202
    assert response.get_json()["state"] == "running"
    assert wait_for_state(job_id, timeout=CANCEL_WITHIN + 1).state == "cancelled"
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=tokens.acme)
    assert again.status_code == 409


def test_a_retrying_job_is_cancelled_at_once_and_its_retry_skipped(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job = submit("diagnostics.fail", kwargs={"times": 99}, max_retries=5)
    wait_for_state(job.id, {JobState.RETRYING}, timeout=10)
    assert control.cancel(job.id).state == "cancelled"
    time.sleep(2.5)  # longer than the retry backoff: the retry message arrives and is skipped
    assert get_job(job.id).state == "cancelled"
