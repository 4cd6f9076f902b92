"""submit(): the row is the outbox, the message follows the commit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from app import db
from app.errors import SubmitError, UnknownActor
from app.jobs import get_job, list_events, submit
from app.messages import ATTEMPTS_OPTION
from app.states import JobState
from app.timeutil import utcnow
from tests.support.waiting import wait_until
from tests.unit.conftest import StubActors


def _queued_ids(stub: StubActors) -> list[str]:
    return [m.message_id for m in _decoded(stub)]


def _decoded(stub: StubActors) -> list:  # type: ignore[type-arg]
    from dramatiq import Message

    queue = stub.broker.queues["default"]
    return [Message.decode(body) for body in list(queue.queue)]


def test_submit_creates_a_queued_row_and_publishes_its_message(stub: StubActors) -> None:
    job = submit(stub.echo, kwargs={"value": 3}, priority=5)

    assert job.state == JobState.QUEUED.value
    stored = get_job(job.id)
    assert (stored.actor, stored.kwargs, stored.priority) == ("t.echo", {"value": 3}, 5)
    # Marked published in the next bulk update, within a fraction of a second.
    wait_until(lambda: get_job(job.id).published_at, 2, "published_at")
    assert [e.kind for e in list_events(job.id)] == ["created"]
    [message] = _decoded(stub)
    assert message.message_id == job.id
    assert message.options["broker_priority"] == 5
    assert message.options[ATTEMPTS_OPTION] == 0


def test_submit_by_actor_name_resolves_the_registered_actor(stub: StubActors) -> None:
    import dramatiq

    previous = dramatiq.get_broker()
    dramatiq.set_broker(stub.broker)
    try:
        job = submit("t.echo", [1])
    finally:
        dramatiq.set_broker(previous)
    assert get_job(job.id).args == [1]


def test_a_job_in_the_callers_transaction_is_published_only_after_commit(
    stub: StubActors,
) -> None:
    session = db.new_session()
    try:
        job = submit(stub.echo, kwargs={"value": 1}, session=session)
        assert _queued_ids(stub) == []
        session.commit()
    finally:
        session.close()
    assert _queued_ids(stub) == [job.id]


def test_a_rolled_back_transaction_leaves_no_job_and_no_message(stub: StubActors) -> None:
    session = db.new_session()
    try:
        job = submit(stub.echo, kwargs={"value": 1}, session=session)
        session.rollback()
        session.commit()  # A later commit of the same session must not publish it either.
    finally:
        session.close()
    assert _queued_ids(stub) == []
    with db.session_scope() as check:
        assert check.get(type(job), job.id) is None


def test_a_delayed_job_is_scheduled_in_the_database_not_published(stub: StubActors) -> None:
    job = submit(stub.echo, kwargs={"value": 1}, delay=timedelta(minutes=5))
    assert job.state == JobState.SCHEDULED.value
    assert job.run_at is not None
    assert _queued_ids(stub) == []


def test_the_same_idempotency_key_returns_the_same_job(stub: StubActors) -> None:
    first = submit(stub.echo, kwargs={"value": 1}, idempotency_key="order-7")
    second = submit(stub.echo, kwargs={"value": 1}, idempotency_key="order-7")
    assert second.id == first.id
    assert _queued_ids(stub) == [first.id]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"priority": 10}, "priority must be between 0 and 9"),
        ({"max_retries": -1}, "max_retries must not be negative"),
        ({"delay": 5, "run_at": utcnow()}, "give delay or run_at, not both"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at must be timezone-aware"),
        ({"args": [object()]}, "args must be JSON-serializable"),
    ],
)
def test_bad_submissions_are_refused_with_what_was_wrong(
    stub: StubActors,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(SubmitError, match=message):
        submit(stub.echo, **kwargs)
    assert _queued_ids(stub) == []


def test_an_unknown_actor_name_is_refused() -> None:
    with pytest.raises(UnknownActor, match=r"no actor named 'nope\.nothing'"):
        submit("nope.nothing")


def test_jobs_of_one_transaction_are_published_only_after_its_outer_commit(
    stub: StubActors,
) -> None:
    """Each submit uses a SAVEPOINT; releasing one must not publish the jobs before it."""
    session = db.new_session()
    try:
        first = submit(stub.echo, kwargs={"value": 1}, session=session)
        second = submit(stub.echo, kwargs={"value": 2}, session=session)
        assert _queued_ids(stub) == []
        session.commit()
    finally:
        session.close()
    assert _queued_ids(stub) == [first.id, second.id]


def test_a_rolled_back_savepoint_keeps_the_earlier_jobs_of_the_transaction(
    stub: StubActors,
) -> None:
    session = db.new_session()
    try:
        kept = submit(stub.echo, kwargs={"value": 1}, session=session)
        with pytest.raises(RuntimeError), session.begin_nested():
            submit(stub.echo, kwargs={"value": 2}, session=session)
            raise RuntimeError("the caller's own savepoint fails")
        session.commit()
    finally:
        session.close()
    assert _queued_ids(stub) == [kept.id]
