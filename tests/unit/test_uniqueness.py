"""Unique jobs: the same actor and arguments while one is active return that job."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import dramatiq
from sqlalchemy import func, select, update

from app import db
from app.jobs import submit
from app.models import Job
from app.timeutil import utcnow
from tests.unit.conftest import StubActors


def _declare(stub: StubActors, **options: Any) -> dramatiq.Actor[Any, Any]:
    @dramatiq.actor(broker=stub.broker, actor_name="t.report", **options)
    def report(order_id: int, detail: str = "") -> None:
        pass

    return report


def _finish_long_ago(job_id: str) -> None:
    with db.session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state="succeeded", created_at=utcnow() - timedelta(hours=1))
        )


def test_the_same_arguments_while_one_is_active_return_the_active_job(stub: StubActors) -> None:
    report = _declare(stub, unique_for=60)
    first = submit(report, kwargs={"order_id": 1})

    assert submit(report, kwargs={"order_id": 1}).id == first.id
    assert submit(report, kwargs={"order_id": 2}).id != first.id


def test_a_finished_job_outside_the_window_lets_a_new_one_in(stub: StubActors) -> None:
    report = _declare(stub, unique_for=60)
    first = submit(report, kwargs={"order_id": 1})
    _finish_long_ago(first.id)

    assert submit(report, kwargs={"order_id": 1}).id != first.id


def test_a_key_function_decides_what_counts_as_the_same(stub: StubActors) -> None:
    report = _declare(stub, unique_for=60, unique_key=lambda order_id, **_: order_id)
    first = submit(report, kwargs={"order_id": 1, "detail": "a"})

    assert submit(report, kwargs={"order_id": 1, "detail": "b"}).id == first.id


def test_actors_without_unique_for_are_not_deduplicated(stub: StubActors) -> None:
    report = _declare(stub)
    assert submit(report, kwargs={"order_id": 1}).id != submit(report, kwargs={"order_id": 1}).id


def test_concurrent_submissions_create_one_job(stub: StubActors) -> None:
    report = _declare(stub, unique_for=60)
    ids: list[str] = []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        ids.append(submit(report, kwargs={"order_id": 9}).id)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(ids)) == 1
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
