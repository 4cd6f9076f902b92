"""Cron ticks on real RabbitMQ: one job per tick however many schedulers send it."""

from __future__ import annotations

from datetime import timedelta

import dramatiq
import pendulum
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient
from periodiq import Scheduler
from sqlalchemy import select

from app import db
from app.jobs import get_job, list_events, submit
from app.models import Job
from app.operations.retention import prune_finished
from app.states import JobState
from app.timeutil import utcnow
from tests.integration.conftest import Tokens
from tests.support import periodic_actors
from tests.support.waiting import wait_for_state, wait_until


def _tick_jobs() -> list[Job]:
    with db.session_scope() as session:
        return list(session.scalars(select(Job).where(Job.actor == "tests.tick")))


def test_two_schedulers_sending_one_tick_make_one_job(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    tick = pendulum.now("UTC").replace(microsecond=0)
    for scheduler in (Scheduler([periodic_actors.tick]), Scheduler([periodic_actors.tick])):
        scheduler.send_actors([periodic_actors.tick], now=tick)

    [job] = wait_until(_tick_jobs, 10, "the tick's job")
    minute = tick.replace(second=0)
    assert job.idempotency_key == f"cron:tests.tick:{minute.isoformat()}"
    assert wait_for_state(job.id).result == "tock"
    rabbit.join("default", min_successes=5, timeout=10_000)  # the duplicate was consumed
    assert len(_tick_jobs()) == 1
    assert get_job(job.id).attempts == 1


def test_schedules_lists_each_cron_with_its_next_run_and_last_job(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    tick = pendulum.now("UTC").replace(microsecond=0)
    Scheduler([periodic_actors.tick]).send_actors([periodic_actors.tick], now=tick)
    [job] = wait_until(_tick_jobs, 10, "the tick's job")

    found = {s["actor"]: s for s in client.get("/v1/schedules", headers=tokens.admin).get_json()}
    assert found["tests.tick"]["cron"] == "* * * * *"
    assert found["tests.tick"]["last_job"]["id"] == job.id
    prune = found["maintenance.prune_jobs"]
    assert prune["cron"] == "17 3 * * *"
    assert prune["next_run_at"].endswith("03:17:00+00:00")


def test_retention_prunes_old_finished_jobs_in_batches_and_keeps_the_rest(
    rabbit: RabbitmqBroker,
) -> None:
    from sqlalchemy import update

    old = [submit("diagnostics.noop") for _ in range(5)]
    recent = submit("diagnostics.noop")
    unfinished = submit("diagnostics.noop")
    with db.session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_([j.id for j in old]))
            .values(state=JobState.SUCCEEDED.value, finished_at=utcnow() - timedelta(days=8))
        )
        session.execute(
            update(Job)
            .where(Job.id == recent.id)
            .values(state=JobState.FAILED.value, finished_at=utcnow() - timedelta(days=1))
        )

    assert prune_finished(days=7, batch=2) == 5

    with db.session_scope() as session:
        left = set(session.scalars(select(Job.id)))
    assert left == {recent.id, unfinished.id}
    assert list_events(old[0].id) == []
