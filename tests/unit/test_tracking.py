"""The tracking middleware on the stub broker: every state change is recorded."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import timedelta

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from app import db
from app.jobs import get_job, list_events, submit
from app.messages import ATTEMPTS_OPTION, REDELIVERED_OPTION, message_for
from app.middleware.tracking import Tracking
from app.models import Job
from app.models import Worker as WorkerRow
from app.states import JobState
from app.timeutil import utcnow
from app.workers import process_key
from tests.support.factories import make_job
from tests.support.waiting import wait_until
from tests.support.workers import running_worker
from tests.unit.conftest import StubActors


def _drain(stub: StubActors) -> None:
    stub.broker.join("default", fail_fast=False)


def _transitions(job_id: str) -> list[tuple[str | None, str | None]]:
    return [(e.from_state, e.to_state) for e in list_events(job_id) if e.kind != "progress"]


def test_a_job_runs_to_succeeded_with_its_result(
    stub: StubActors, stub_worker: dramatiq.Worker
) -> None:
    job = submit(stub.echo, kwargs={"value": {"answer": 42}})
    _drain(stub)

    done = get_job(job.id)
    assert done.state == "succeeded"
    assert done.result == {"answer": 42}
    assert done.attempts == 1
    assert done.worker_id and done.started_at and done.finished_at
    assert _transitions(job.id) == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]


def test_a_failing_job_is_retried_then_succeeds(
    stub: StubActors, stub_worker: dramatiq.Worker
) -> None:
    job = submit(stub.flaky, kwargs={"times": 1})
    _drain(stub)

    done = get_job(job.id)
    assert (done.state, done.result, done.attempts) == ("succeeded", 2, 2)
    assert _transitions(job.id) == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "retrying"),
        ("retrying", "running"),
        ("running", "succeeded"),
    ]
    retrying = [e for e in list_events(job.id) if e.to_state == "retrying"]
    assert retrying[0].attempt == 1


def test_a_job_that_keeps_failing_ends_failed_and_dead_lettered(
    stub: StubActors, stub_worker: dramatiq.Worker
) -> None:
    job = submit(stub.flaky, kwargs={"times": 99})
    _drain(stub)

    done = get_job(job.id)
    assert done.state == "failed"
    assert done.attempts == 3  # the first attempt and max_retries=2 retries
    assert done.error_type == "RuntimeError"
    assert done.error_message == "attempt 3 fails"
    assert "RuntimeError: attempt 3 fails" in (done.error_traceback or "")
    assert [m.message_id for m in stub.broker.dead_letters] == [job.id]
    assert list_events(job.id)[-1].data == {
        "reason": "retries_exhausted",
        "dead_lettered": True,
        "error_type": "RuntimeError",
    }


def test_a_permanent_error_fails_at_once(stub: StubActors, stub_worker: dramatiq.Worker) -> None:
    job = submit(stub.broken)
    _drain(stub)

    done = get_job(job.id)
    assert (done.state, done.attempts, done.error_type) == ("failed", 1, "PermanentError")
    assert [m.message_id for m in stub.broker.dead_letters] == [job.id]
    assert list_events(job.id)[-1].data["reason"] == "permanent"  # type: ignore[index]


def test_a_plain_actor_send_gets_a_row_too(stub: StubActors, stub_worker: dramatiq.Worker) -> None:
    message = stub.echo.send("plain")
    # Marked at once, unless the worker already holds the row (PostgreSQL's SKIP LOCKED):
    # then the background pass marks it right after.
    wait_until(lambda: get_job(message.message_id).published_at, 5, "published_at")

    _drain(stub)
    done = get_job(message.message_id)
    assert (done.state, done.args, done.result) == ("succeeded", ["plain"], "plain")


def test_a_second_publish_of_a_succeeded_job_does_not_run_it_again(
    stub: StubActors, stub_worker: dramatiq.Worker
) -> None:
    job = submit(stub.counted)
    _drain(stub)
    finished = get_job(job.id)
    events_before = len(list_events(job.id))

    stub.broker.enqueue(message_for(finished))
    _drain(stub)

    assert stub.runs == [job.id]
    assert get_job(job.id).attempts == 1
    assert len(list_events(job.id)) == events_before


class _Delivered(MessageProxy):
    """A message as a broker hands it to a worker, with RabbitMQ's redelivered flag."""

    def __init__(self, message: dramatiq.Message, redelivered: bool) -> None:  # type: ignore[type-arg]
        super().__init__(message)
        self.redelivered = redelivered


def _deliver(stub: StubActors, job_id: str, sent_after: int, redelivered: bool) -> None:
    message = stub.counted.message().copy(message_id=job_id, options={ATTEMPTS_OPTION: sent_after})
    tracking = next(m for m in stub.broker.middleware if isinstance(m, Tracking))
    tracking.before_process_message(stub.broker, _Delivered(message, redelivered))


def test_a_redelivery_after_a_worker_died_starts_a_new_attempt(stub: StubActors) -> None:
    job_id = make_job(JobState.RUNNING, attempts=1)
    _deliver(stub, job_id, sent_after=0, redelivered=True)

    job = get_job(job_id)
    assert (job.state, job.attempts) == ("running", 2)
    assert list_events(job_id)[-1].kind == "redelivered"


def test_a_duplicate_of_a_running_job_that_is_not_a_redelivery_is_skipped(stub: StubActors) -> None:
    job_id = make_job(JobState.RUNNING, attempts=1)
    with pytest.raises(SkipMessage):
        _deliver(stub, job_id, sent_after=0, redelivered=False)
    assert get_job(job_id).attempts == 1


def test_a_stale_message_of_a_retrying_job_is_skipped(stub: StubActors) -> None:
    job_id = make_job(JobState.RETRYING, attempts=2)
    with pytest.raises(SkipMessage):
        _deliver(stub, job_id, sent_after=0, redelivered=True)
    _deliver(stub, job_id, sent_after=2, redelivered=False)
    assert get_job(job_id).attempts == 3


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
def test_a_message_for_a_finished_job_is_skipped(stub: StubActors, state: JobState) -> None:
    job_id = make_job(state, attempts=1)
    with pytest.raises(SkipMessage):
        _deliver(stub, job_id, sent_after=1, redelivered=False)
    assert get_job(job_id).state == state.value


def test_a_duplicate_skipped_in_another_thread_leaves_the_running_attempt_alone(
    stub: StubActors,
) -> None:
    """Both deliveries of one message in one process: the skip must not erase the run."""
    job = submit(stub.counted)
    tracking = next(m for m in stub.broker.middleware if isinstance(m, Tracking))
    original = _Delivered(message_for(get_job(job.id)), redelivered=False)
    duplicate = _Delivered(message_for(get_job(job.id)), redelivered=False)
    tracking.before_process_message(stub.broker, original)

    def deliver_duplicate() -> None:
        with pytest.raises(SkipMessage):
            tracking.before_process_message(stub.broker, duplicate)
        tracking.after_skip_message(stub.broker, duplicate)

    other = threading.Thread(target=deliver_duplicate)
    other.start()
    other.join()
    tracking.after_process_message(stub.broker, original, result="done")

    finished = get_job(job.id)
    assert (finished.state, finished.result, finished.attempts) == ("succeeded", "done", 1)


class _AckSpy(Middleware):
    """Reads the job's committed state, from another session, as Dramatiq acks or nacks."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def before_ack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.seen.append(("ack", get_job(message.message_id).state))

    def before_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.seen.append(("nack", get_job(message.message_id).state))


def test_the_new_state_is_committed_before_the_message_is_acked_or_nacked(
    stub: StubActors,
) -> None:
    spy = _AckSpy()
    stub.broker.add_middleware(spy)
    with running_worker(stub.broker, threads=1):
        submit(stub.echo, kwargs={"value": 1})
        stub.broker.join("default", fail_fast=False)
        submit(stub.broken)
        stub.broker.join("default", fail_fast=False)

    assert spy.seen == [("ack", "succeeded"), ("nack", "failed")]


def _start_event(job_id: str, sent_after: int, deaths: int = 0) -> None:
    from app import db
    from app.transitions import append_event

    with db.session_scope() as session:
        append_event(
            session, job_id, "redelivered", data={"sent_after": sent_after, "deaths": deaths}
        )


def test_a_message_redelivered_again_after_a_second_death_restarts_the_job(
    stub: StubActors,
) -> None:
    job_id = make_job(JobState.RUNNING, attempts=2)
    _start_event(job_id, sent_after=0, deaths=1)  # attempt 2 came from the first message

    _deliver(stub, job_id, sent_after=0, redelivered=True)

    job = get_job(job_id)
    assert (job.state, job.attempts) == ("running", 3)
    assert list_events(job_id)[-1].data["deaths"] == 2  # type: ignore[index]


def test_an_old_message_redelivered_while_its_retry_runs_is_skipped(stub: StubActors) -> None:
    job_id = make_job(JobState.RUNNING, attempts=2)
    _start_event(job_id, sent_after=1)  # attempt 2 came from the retry message

    with pytest.raises(SkipMessage):
        _deliver(stub, job_id, sent_after=0, redelivered=True)
    assert get_job(job_id).attempts == 2


def test_the_third_death_fails_the_job_as_poison_and_dead_letters_the_message(
    stub: StubActors,
) -> None:
    job_id = make_job(JobState.RUNNING, attempts=3)
    _start_event(job_id, sent_after=0, deaths=2)
    message = _Delivered(
        stub.counted.message().copy(message_id=job_id, options={ATTEMPTS_OPTION: 0}), True
    )
    tracking = next(m for m in stub.broker.middleware if isinstance(m, Tracking))

    with pytest.raises(SkipMessage):
        tracking.before_process_message(stub.broker, message)

    assert message.failed  # so Dramatiq nacks it into the dead-letter queue
    job = get_job(job_id)
    assert (job.state, job.error_type) == ("failed", "PoisonMessage")


def test_an_actors_time_limit_is_capped_below_the_consumer_timeout(stub: StubActors) -> None:
    from app.middleware.time_limit import CappedTimeLimit

    @dramatiq.actor(broker=stub.broker, actor_name="t.endless", time_limit=3_600_000, max_retries=0)
    def endless() -> None:
        for _ in range(600):
            time.sleep(0.05)

    capped = next(m for m in stub.broker.middleware if isinstance(m, CappedTimeLimit))
    capped.cap_ms = 300  # as JOBSTACK_MAX_TIME_LIMIT=0.3 would
    started = time.monotonic()
    with running_worker(stub.broker, threads=1):
        job = submit(endless)
        stub.broker.join("default", fail_fast=False)

    assert time.monotonic() - started < 5
    done = get_job(job.id)
    assert (done.state, done.error_type) == ("failed", "TimeLimitExceeded")


def _holder(
    job_id: str, *, silent_for: float, lists_the_job: bool, process_key: str | None = None
) -> None:
    """The job's current attempt started 30 s ago by worker ``w:1``, whose last heartbeat
    was ``silent_for`` seconds ago."""
    now = utcnow()
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.worker_id, job.started_at = "w:1", now - timedelta(seconds=30)
        session.add(
            WorkerRow(
                id="w:1",
                hostname="w",
                pid=1,
                queues=["default"],
                started_at=now - timedelta(minutes=5),
                last_seen=now - timedelta(seconds=silent_for),
                running_job_ids=[job_id] if lists_the_job else [],
                process_key=process_key,
            )
        )


def _held_back(stub: StubActors) -> list[dramatiq.Message]:  # type: ignore[type-arg]
    return [dramatiq.Message.decode(body) for body in stub.broker.queues["default.DQ"].queue]


def test_a_redelivery_while_its_worker_still_runs_the_job_is_sent_again_later(
    stub: StubActors,
) -> None:
    """A worker that lost its connection to RabbitMQ runs on: its job must not start
    twice. The message goes back through the delay queue, still a redelivery."""
    job_id = make_job(JobState.RUNNING, attempts=1)
    _holder(job_id, silent_for=0.1, lists_the_job=True)

    with pytest.raises(SkipMessage):
        _deliver(stub, job_id, sent_after=0, redelivered=True)

    assert (get_job(job_id).state, get_job(job_id).attempts) == ("running", 1)
    [copy] = _held_back(stub)
    assert (copy.message_id, copy.options[REDELIVERED_OPTION]) == (job_id, True)
    assert copy.options["eta"] >= time.time() * 1000 + 0.9 * 1000  # at least a second on

    # The worker then falls silent (it died): the copy starts the next attempt, as a
    # redelivery (a death, for the poison rule).
    with db.session_scope() as session:
        worker = session.get(WorkerRow, "w:1")
        assert worker is not None
        worker.last_seen = utcnow() - timedelta(seconds=60)
    tracking = next(m for m in stub.broker.middleware if isinstance(m, Tracking))
    tracking.before_process_message(stub.broker, MessageProxy(copy))
    assert (get_job(job_id).state, get_job(job_id).attempts) == ("running", 2)
    assert list_events(job_id)[-1].kind == "redelivered"


def test_a_redelivery_of_a_job_its_live_worker_no_longer_runs_starts_it(
    stub: StubActors,
) -> None:
    """Heartbeats since the start that do not list the job: the worker dropped it (a
    claim lost with its connection), so waiting for it would wait forever."""
    job_id = make_job(JobState.RUNNING, attempts=1)
    _holder(job_id, silent_for=0.1, lists_the_job=False)

    _deliver(stub, job_id, sent_after=0, redelivered=True)

    assert get_job(job_id).attempts == 2
    assert _held_back(stub) == []


def test_a_redelivery_whose_worker_died_on_this_machine_starts_at_once(
    stub: StubActors,
) -> None:
    """Its last heartbeat is recent and lists the job, but its process is gone (SIGKILL,
    the OOM killer): waiting for it to fall silent would only delay the job."""
    dead = subprocess.Popen(["sleep", "60"])
    key = process_key(dead.pid)
    dead.kill()
    dead.wait()
    job_id = make_job(JobState.RUNNING, attempts=1)
    _holder(job_id, silent_for=0.1, lists_the_job=True, process_key=key)

    _deliver(stub, job_id, sent_after=0, redelivered=True)

    assert get_job(job_id).attempts == 2
    assert list_events(job_id)[-1].kind == "redelivered"
    assert _held_back(stub) == []


def test_a_redelivery_whose_worker_runs_on_this_machine_still_waits(stub: StubActors) -> None:
    """The same with the worker's process alive: it lost its broker connection, not its
    life, so its job must not start twice."""
    job_id = make_job(JobState.RUNNING, attempts=1)
    _holder(job_id, silent_for=0.1, lists_the_job=True, process_key=process_key())

    with pytest.raises(SkipMessage):
        _deliver(stub, job_id, sent_after=0, redelivered=True)

    assert get_job(job_id).attempts == 1
    assert [copy.message_id for copy in _held_back(stub)] == [job_id]
