"""One batch of starts and outcomes: common cases and exceptions side by side, each right."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from dramatiq.message import generate_unique_id
from sqlalchemy import update

from app import db
from app.errors import StaleAttempt
from app.jobs import get_job, list_events
from app.models import Job
from app.recording.batch import apply_changes
from app.recording.changes import ChangeResult, RecordOutcome, StartAttempt, StateChange
from app.recording.group_commit import GroupCommitter
from app.states import JobState
from app.timeutil import utcnow
from tests.support.factories import delivered_message, make_job


def _apply(changes: list[StateChange]) -> list[Any]:
    with db.session_scope() as session:
        return apply_changes(session, changes)


def _events(job_id: str) -> list[tuple[int, str, str | None, str | None, int | None]]:
    return [(e.seq, e.kind, e.from_state, e.to_state, e.attempt) for e in list_events(job_id)]


def test_a_mixed_batch_applies_each_change_as_if_alone(clean_db: str) -> None:
    queued = make_job(JobState.QUEUED)
    retrying = make_job(JobState.RETRYING, attempts=1)
    stale = make_job(JobState.QUEUED, attempts=1)  # this message was sent after 0
    running = make_job(JobState.RUNNING, attempts=2)
    cancel_asked = make_job(JobState.QUEUED)
    with db.session_scope() as session:
        session.execute(
            update(Job).where(Job.id == cancel_asked).values(cancel_requested_at=utcnow())
        )
    unrecorded = generate_unique_id()  # a plain send whose row was never written

    results = _apply(
        [
            StartAttempt(delivered_message(queued), redelivered=False),
            StartAttempt(delivered_message(retrying, sent_after=1), redelivered=False),
            StartAttempt(delivered_message(stale), redelivered=False),
            RecordOutcome(running, 2, JobState.SUCCEEDED, {"result": {"n": 1}}, None),
            StartAttempt(delivered_message(cancel_asked), redelivered=False),
            StartAttempt(delivered_message(unrecorded), redelivered=False),
        ]
    )

    assert results == [1, 2, None, None, None, 1]
    assert (get_job(queued).state, get_job(queued).attempts) == ("running", 1)
    assert _events(queued)[-1] == (2, "started", "queued", "running", 1)
    assert _events(retrying)[-1] == (2, "started", "retrying", "running", 2)
    assert (get_job(stale).state, len(_events(stale))) == ("queued", 1)
    done = get_job(running)
    assert (done.state, done.result, done.attempts) == ("succeeded", {"n": 1}, 2)
    assert _events(running)[-1] == (2, "succeeded", "running", "succeeded", 2)
    assert get_job(cancel_asked).state == "cancelled"
    assert (get_job(unrecorded).state, get_job(unrecorded).attempts) == ("running", 1)
    assert [kind for _, kind, *_ in _events(unrecorded)] == ["created", "started"]


def test_two_changes_to_one_job_in_a_batch_apply_in_order(clean_db: str) -> None:
    job = make_job(JobState.QUEUED)

    results = _apply(
        [
            StartAttempt(delivered_message(job), redelivered=False),
            RecordOutcome(job, 1, JobState.RETRYING, {"error_message": "boom"}, None),
            StartAttempt(delivered_message(job, sent_after=1), redelivered=False),
        ]
    )

    assert results == [1, None, 2]
    assert [(kind, to) for _, kind, _, to, _ in _events(job)] == [
        ("created", "queued"),
        ("started", "running"),
        ("retrying", "retrying"),
        ("started", "running"),
    ]


def test_every_kind_of_outcome_sets_its_columns_and_event_exactly(clean_db: str) -> None:
    succeeded, retrying, failed = (make_job(JobState.RUNNING, attempts=1) for _ in range(3))
    later = utcnow().replace(microsecond=0) + timedelta(minutes=5)
    result = {"zeta": 1, "alpha": [1, None, "ü"]}  # Key order is part of what is stored.
    traceback_text = "Traceback (most recent call last):\n  ...\nValueError: 'quoted' \\ é"

    _apply(
        [
            RecordOutcome(
                succeeded, 1, JobState.SUCCEEDED, {"result": result, "progress": 100}, None
            ),
            RecordOutcome(
                retrying,
                1,
                JobState.RETRYING,
                {
                    "error_type": "ValueError",
                    "error_message": "bad",
                    "error_traceback": traceback_text,
                    "run_at": later,
                    "published_at": None,
                },
                None,
            ),
            RecordOutcome(
                failed,
                1,
                JobState.FAILED,
                {"error_type": "Boom", "finished_at": later},
                {"reason": "permanent", "dead_lettered": True},
            ),
        ]
    )

    done = get_job(succeeded)
    assert (done.state, done.result, done.progress) == ("succeeded", result, 100)
    assert list(done.result) == ["zeta", "alpha"]  # type: ignore[arg-type]
    assert list_events(succeeded)[-1].data is None
    again = get_job(retrying)
    assert (again.state, again.error_type, again.error_message) == ("retrying", "ValueError", "bad")
    assert (again.error_traceback, again.run_at, again.published_at) == (
        traceback_text,
        later,
        None,
    )
    dead = get_job(failed)
    assert (dead.state, dead.error_type, dead.finished_at) == ("failed", "Boom", later)
    assert list_events(failed)[-1].data == {"reason": "permanent", "dead_lettered": True}
    assert _events(failed)[-1] == (2, "failed", "running", "failed", 1)


def test_an_outcome_for_a_stale_attempt_fails_alone(clean_db: str) -> None:
    running = make_job(JobState.RUNNING, attempts=3)
    other = make_job(JobState.RUNNING, attempts=1)

    results = _apply(
        [
            RecordOutcome(running, 2, JobState.SUCCEEDED, {}, None),
            RecordOutcome(other, 1, JobState.FAILED, {"error_type": "E"}, {"reason": "x"}),
        ]
    )

    assert isinstance(results[0], StaleAttempt)
    assert (get_job(running).state, len(_events(running))) == ("running", 1)
    assert results[1] is None
    assert get_job(other).state == "failed"
    assert list_events(other)[-1].data == {"reason": "x"}


def test_a_failure_after_the_common_cases_committed_does_not_apply_them_twice(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL the common cases commit first; on SQLite all of a batch rolls back
    # together. Either way each change ends applied exactly once, or failed alone.
    common = make_job(JobState.QUEUED)
    odd = make_job(JobState.QUEUED)
    with db.session_scope() as session:  # A cancellation request sends it down the general path.
        session.execute(update(Job).where(Job.id == odd).values(cancel_requested_at=utcnow()))

    def broken_start(*_args: Any) -> None:
        raise RuntimeError("the general path broke")

    monkeypatch.setattr("app.recording.batch.start_attempt", broken_start)
    committer: GroupCommitter[StateChange, ChangeResult] = GroupCommitter(
        apply_changes, name="test-commit"
    )
    results: dict[str, Any] = {}
    hold = threading.Event()
    apply = committer._apply

    def held(session: Any, changes: Any) -> Any:
        hold.wait(5)  # Both changes in one batch.
        return apply(session, changes)

    committer._apply = held

    def start(job_id: str) -> None:
        try:
            results[job_id] = committer.run(
                StartAttempt(delivered_message(job_id), redelivered=False), give_up_after=2
            )
        except Exception as error:
            results[job_id] = error

    threads = [threading.Thread(target=start, args=(job,)) for job in (common, odd)]
    for thread in threads:
        thread.start()
    threading.Timer(0.3, hold.set).start()
    for thread in threads:
        thread.join(10)
    committer.stop()

    assert results[common] == 1
    assert [kind for _, kind, *_ in _events(common)] == ["created", "started"]
    assert (get_job(common).state, get_job(common).attempts) == ("running", 1)
    assert isinstance(results[odd], RuntimeError)
    assert get_job(odd).state == "queued"
