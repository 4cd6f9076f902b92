"""The outbox relay publishes what has no message, one relay at a time."""

from __future__ import annotations

from datetime import timedelta

from dramatiq import Message
from sqlalchemy import update

from app import db
from app.config import Settings
from app.jobs import get_job, list_events, submit
from app.messages import ATTEMPTS_OPTION
from app.models import Job
from app.outbox.publish import published_marks
from app.outbox.relay import Relay
from app.states import JobState
from app.timeutil import utcnow
from tests.unit.conftest import StubActors

SETTINGS = Settings(relay_grace=1.0, relay_lease=30.0)


def _relay(stub: StubActors, holder: str) -> Relay:
    relay = Relay(stub.broker, SETTINGS)
    relay.holder = holder
    return relay


def _published(stub: StubActors) -> list[Message]:  # type: ignore[type-arg]
    return [Message.decode(body) for body in list(stub.broker.queues["default"].queue)]


def _set(job_id: str, **values: object) -> None:
    with db.session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _unpublished_job(stub: StubActors, age: timedelta) -> str:
    job = submit(stub.echo, kwargs={"value": 1})
    stub.broker.flush_all()  # As if the publish after commit had failed,
    published_marks.flush()  # and its mark had been made before this "undoes" it.
    _set(job.id, published_at=None, created_at=utcnow() - age)
    return job.id


def test_a_queued_job_left_unpublished_is_published_after_the_grace(stub: StubActors) -> None:
    recent = _unpublished_job(stub, age=timedelta(0))
    old = _unpublished_job(stub, age=timedelta(seconds=5))

    assert _relay(stub, "a").run_once() == 1

    assert [m.message_id for m in _published(stub)] == [old]
    assert get_job(old).published_at is not None
    assert get_job(recent).published_at is None


def test_a_due_scheduled_job_is_queued_and_published(stub: StubActors) -> None:
    due = submit(stub.echo, kwargs={"value": 1}, delay=timedelta(hours=1))
    later = submit(stub.echo, kwargs={"value": 2}, delay=timedelta(hours=1))
    _set(due.id, run_at=utcnow() - timedelta(seconds=1))

    assert _relay(stub, "a").run_once() == 1

    assert [m.message_id for m in _published(stub)] == [due.id]
    assert get_job(due.id).state == JobState.QUEUED.value
    assert [e.kind for e in list_events(due.id)] == ["created", "due"]
    assert get_job(later.id).state == JobState.SCHEDULED.value


def test_a_retry_that_could_not_be_enqueued_is_published_for_its_next_attempt(
    stub: StubActors,
) -> None:
    job_id = _unpublished_job(stub, age=timedelta(seconds=5))
    _set(job_id, state="retrying", attempts=2, run_at=utcnow() - timedelta(seconds=1))

    assert _relay(stub, "a").run_once() == 1

    [message] = _published(stub)
    assert message.options[ATTEMPTS_OPTION] == 2


def test_only_the_lease_holder_publishes(stub: StubActors) -> None:
    first, second = _relay(stub, "first"), _relay(stub, "second")
    assert first.run_once() == 0  # Takes the lease; nothing to publish yet.
    _unpublished_job(stub, age=timedelta(seconds=5))

    assert second.run_once() == 0
    assert _published(stub) == []
    assert first.run_once() == 1

    first.stop()  # Releases the lease (the thread was never started).
    _unpublished_job(stub, age=timedelta(seconds=5))
    assert second.run_once() == 1
