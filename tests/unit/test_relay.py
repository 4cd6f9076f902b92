"""The outbox relay publishes what has no message: on SQLite one relay at a time under a
lease; on PostgreSQL every relay at once, each on rows it has locked. And the lease."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import OperationalError

from app import db
from app.config import Settings
from app.jobs import get_job, list_events, submit
from app.messages import ATTEMPTS_OPTION
from app.models import Job, Lease
from app.outbox import leases
from app.outbox import relay as relay_module
from app.outbox.publish import published_marks
from app.outbox.relay import Relay
from app.states import JobState
from app.timeutil import utcnow
from tests.support.factories import make_job
from tests.unit.conftest import StubActors

SETTINGS = Settings(relay_grace=1.0, relay_lease=30.0)
LEASE = "test-lease"
TTL = timedelta(seconds=30)


def _relay(stub: StubActors, holder: str, settings: Settings = SETTINGS) -> Relay:
    relay = Relay(stub.broker, settings)
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


def _due_rows(count: int) -> list[str]:
    """Queued rows left unpublished well past the grace."""
    return [make_job(created_at=utcnow() - timedelta(minutes=1)) for _ in range(count)]


def _acquire(holder: str, ttl: timedelta = TTL) -> bool:
    with db.session_scope() as session:
        return leases.acquire(session, LEASE, holder, ttl)


def _lease() -> tuple[str, datetime]:
    with db.session_scope() as session:
        lease = session.execute(select(Lease.holder, Lease.expires_at)).one()
        return lease.holder, lease.expires_at


def test_a_queued_job_left_unpublished_is_published_after_the_grace(stub: StubActors) -> None:
    recent = _unpublished_job(stub, age=timedelta(0))
    old = _unpublished_job(stub, age=timedelta(seconds=5))

    assert _relay(stub, "a").run_once() == 1

    assert [m.message_id for m in _published(stub)] == [old]
    assert get_job(old).published_at is not None
    assert get_job(recent).published_at is None


def test_a_due_scheduled_job_is_queued_and_published(stub: StubActors) -> None:
    # Created just now, younger than the grace: due all the same once its time has come.
    due = submit(stub.echo, kwargs={"value": 1}, delay=timedelta(hours=1))
    later = submit(stub.echo, kwargs={"value": 2}, delay=timedelta(hours=1))
    _set(due.id, run_at=utcnow() - timedelta(seconds=1))

    assert _relay(stub, "a").run_once() == 1

    assert [m.message_id for m in _published(stub)] == [due.id]
    assert get_job(due.id).state == JobState.QUEUED.value
    assert get_job(due.id).published_at is not None
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


def test_a_relay_that_published_a_full_batch_goes_on_at_once(
    stub: StubActors, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _due_rows(5)
    relay = _relay(stub, "a", Settings(relay_grace=1.0, relay_batch=2, relay_interval=7.0))
    waits: list[float] = []

    def wait(timeout: float) -> bool:
        waits.append(timeout)
        return len(waits) > 4  # Stop before the fifth pass.

    monkeypatch.setattr(relay._stop_event, "wait", wait)

    relay.run()  # On this thread: four passes, then stopped.

    # Full batches of 2, 2, then 1 and nothing: the interval is waited only after those.
    assert waits == [7.0, 0, 0, 7.0, 7.0]
    assert sorted(m.message_id for m in _published(stub)) == sorted(jobs)


def test_a_relay_whose_broker_fails_waits_the_interval(
    stub: StubActors, monkeypatch: pytest.MonkeyPatch
) -> None:
    _due_rows(2)
    relay = _relay(stub, "a", Settings(relay_grace=1.0, relay_batch=2, relay_interval=7.0))
    waits: list[float] = []

    def wait(timeout: float) -> bool:
        waits.append(timeout)
        return len(waits) > 2

    def enqueue(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(relay._stop_event, "wait", wait)
    monkeypatch.setattr(stub.broker, "enqueue", enqueue)

    relay.run()

    assert waits == [7.0, 7.0, 7.0]  # A full batch found, none published: no busy loop.


def test_on_sqlite_only_the_lease_holder_publishes(stub: StubActors) -> None:
    if db.get_engine().dialect.name != "sqlite":
        pytest.skip("on PostgreSQL relays share the rows (test_concurrent_relays_…)")
    first, second = _relay(stub, "first"), _relay(stub, "second")
    assert first.run_once() == 0  # Takes the lease; nothing to publish yet.
    _unpublished_job(stub, age=timedelta(seconds=5))

    assert second.run_once() == 0
    assert _published(stub) == []
    assert first.run_once() == 1

    first.stop()  # Releases the lease (the thread was never started).
    _unpublished_job(stub, age=timedelta(seconds=5))
    assert second.run_once() == 1


def test_concurrent_relays_on_postgresql_never_take_the_same_rows(
    stub: StubActors, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _due_rows(4)
    settings = Settings(relay_grace=1.0, relay_batch=2)
    first, second = _relay(stub, "first", settings), _relay(stub, "second", settings)
    publishing, resume = threading.Event(), threading.Event()
    resumed_by_test: list[bool] = []
    enqueue = stub.broker.enqueue

    def enqueue_pausing_the_first(message: Message[Any], **kwargs: Any) -> Message[Any]:
        if threading.current_thread().name == "first-pass" and not publishing.is_set():
            publishing.set()  # The first relay is mid-publish, its rows locked, unmarked.
            resumed_by_test.append(resume.wait(10))
        return enqueue(message, **kwargs)

    monkeypatch.setattr(stub.broker, "enqueue", enqueue_pausing_the_first)
    counts: dict[str, int] = {}
    first_pass = threading.Thread(
        target=lambda: counts.update(first=first.run_once()), name="first-pass"
    )
    first_pass.start()
    assert publishing.wait(10)

    counts["second"] = second.run_once()
    resume.set()
    first_pass.join(10)

    assert resumed_by_test == [True]  # The second did not wait for the first's rows,
    assert counts == {"first": 2, "second": 2}  # it took the other two,
    published = Counter(m.message_id for m in _published(stub))
    assert published == Counter(jobs)  # and each job went out once,
    assert all(get_job(job).published_at is not None for job in jobs)  # marked by its relay.
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Lease)) == 0  # No lease.


def test_a_relay_that_fails_before_marking_leaves_its_rows_to_another(
    stub: StubActors, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _due_rows(3)

    def connection_lost(*args: Any) -> None:
        raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))

    monkeypatch.setattr(relay_module, "mark_claimed", connection_lost)
    with pytest.raises(OperationalError):
        _relay(stub, "first").run_once()
    monkeypatch.undo()

    assert all(get_job(job).published_at is None for job in jobs)  # Its claim rolled back,
    assert _relay(stub, "second").run_once() == 3  # so another relay publishes them again:
    assert Counter(m.message_id for m in _published(stub)) == Counter(jobs * 2)  # duplicates.
    assert all(get_job(job).published_at is not None for job in jobs)


def test_the_rows_of_a_frozen_relay_are_freed_by_the_server(
    stub: StubActors, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _due_rows(2)
    monkeypatch.setattr(relay_module, "CLAIM_IDLE_TIMEOUT_MS", 300)
    frozen, thawed = threading.Event(), threading.Event()
    enqueue = stub.broker.enqueue

    def enqueue_freezing(message: Message[Any], **kwargs: Any) -> Message[Any]:
        if threading.current_thread().name == "frozen-pass" and not frozen.is_set():
            frozen.set()
            thawed.wait(10)
        return enqueue(message, **kwargs)

    monkeypatch.setattr(stub.broker, "enqueue", enqueue_freezing)
    failures: list[BaseException] = []

    def frozen_pass() -> None:
        try:
            _relay(stub, "frozen").run_once()
        except Exception as error:
            failures.append(error)

    frozen_thread = threading.Thread(target=frozen_pass, name="frozen-pass")
    frozen_thread.start()
    assert frozen.wait(10)
    threading.Event().wait(1.0)  # Past the idle timeout: the server ends its transaction.

    assert _relay(stub, "other").run_once() == 2
    thawed.set()
    frozen_thread.join(10)

    assert len(failures) == 1  # Its mark found the session gone; it marked nothing.
    assert all(get_job(job).published_at is not None for job in jobs)


def test_a_second_holder_is_refused_in_one_statement_without_an_error(clean_db: str) -> None:
    statements: list[str] = []
    errors: list[BaseException] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def failed(context: Any) -> None:
        errors.append(context.original_exception)

    assert _acquire("first")
    engine = db.get_engine()
    with db.session_scope() as session:
        session.connection()  # The transaction is open (SQLite's BEGIN is not counted).
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "handle_error", failed)
        try:
            refused = not leases.acquire(session, LEASE, "second", TTL)
        finally:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "handle_error", failed)

    assert refused
    assert errors == []  # No failed INSERT, caught or not.
    assert len(statements) == 1  # No UPDATE first, no savepoint.
    assert _lease()[0] == "first"


def test_an_expired_lease_passes_to_the_next_holder(clean_db: str) -> None:
    assert _acquire("first", ttl=timedelta(milliseconds=100))
    assert not _acquire("second")
    threading.Event().wait(0.3)

    assert _acquire("second")
    assert _lease()[0] == "second"
    assert not _acquire("first")


def test_the_holder_renews_its_lease(clean_db: str) -> None:
    assert _acquire("first", ttl=timedelta(seconds=10))
    _, expires = _lease()

    assert _acquire("first", ttl=timedelta(seconds=60))

    holder, renewed = _lease()
    assert holder == "first"
    assert renewed - expires >= timedelta(seconds=49)
    assert not _acquire("second")


def test_a_lease_lasts_by_the_database_clock_whatever_the_holders_clocks(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_now = datetime.now(UTC)

    def skewed(by: timedelta) -> None:
        # Wherever the lease code might read Python's clock from.
        monkeypatch.setattr("app.timeutil.utcnow", lambda: real_now + by)
        monkeypatch.setattr(leases, "utcnow", lambda: real_now + by, raising=False)

    skewed(-timedelta(hours=1))  # The holder's clock is an hour slow:
    assert _acquire("slow")
    _, expires = _lease()
    assert abs(expires - (real_now + TTL)) < timedelta(seconds=5)  # its lease still lasts.

    skewed(timedelta(hours=1))  # Another's clock is an hour fast:
    assert not _acquire("fast")  # it cannot take the lease before it expires.
    assert _lease()[0] == "slow"
