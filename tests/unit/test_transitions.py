"""The state machine: every allowed and every forbidden pair, applied to a real database."""

from __future__ import annotations

import itertools

import pytest

from app import db
from app.errors import InvalidTransition, JobNotFound, StaleAttempt
from app.jobs import get_job, list_events
from app.states import ALLOWED_TRANSITIONS, TERMINAL_STATES, JobState, is_allowed
from app.transitions import append_event, transition
from tests.support.factories import make_job

PAIRS = list(itertools.product(JobState, JobState))
ALLOWED = [(a, b) for a, b in PAIRS if is_allowed(a, b)]
FORBIDDEN = [(a, b) for a, b in PAIRS if not is_allowed(a, b)]

pytestmark = pytest.mark.usefixtures("clean_db")


def test_the_transition_table_is_the_designed_one() -> None:
    assert set(ALLOWED) == {
        (JobState.SCHEDULED, JobState.QUEUED),
        (JobState.SCHEDULED, JobState.CANCELLED),
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.QUEUED, JobState.CANCELLED),
        (JobState.QUEUED, JobState.FAILED),
        (JobState.RUNNING, JobState.RUNNING),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.RETRYING),
        (JobState.RUNNING, JobState.FAILED),
        (JobState.RUNNING, JobState.CANCELLED),
        (JobState.RETRYING, JobState.RUNNING),
        (JobState.RETRYING, JobState.CANCELLED),
        (JobState.RETRYING, JobState.FAILED),
        (JobState.FAILED, JobState.QUEUED),
        (JobState.CANCELLED, JobState.QUEUED),
    }
    assert ALLOWED_TRANSITIONS[JobState.SUCCEEDED] == frozenset()
    assert all(not is_allowed(JobState.SUCCEEDED, state) for state in JobState)
    assert {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED} == TERMINAL_STATES


@pytest.mark.parametrize(("from_state", "to_state"), ALLOWED, ids=lambda s: s.value)
def test_an_allowed_transition_updates_the_row_and_appends_one_event(
    from_state: JobState, to_state: JobState
) -> None:
    job_id = make_job(from_state, attempts=1)
    with db.session_scope() as session:
        done = transition(session, job_id, to_state, values={"progress": 7}, data={"why": "test"})

    job = get_job(job_id)
    assert job.state == to_state.value
    assert job.progress == 7
    assert (done.from_state, done.to_state, done.seq) == (from_state, to_state, 2)
    events = list_events(job_id)
    assert [(e.seq, e.from_state, e.to_state, e.data) for e in events[1:]] == [
        (2, from_state.value, to_state.value, {"why": "test"})
    ]
    assert job.last_event_seq == 2


@pytest.mark.parametrize(("from_state", "to_state"), FORBIDDEN, ids=lambda s: s.value)
def test_a_forbidden_transition_raises_and_changes_nothing(
    from_state: JobState, to_state: JobState
) -> None:
    job_id = make_job(from_state)
    with pytest.raises(InvalidTransition) as raised, db.session_scope() as session:
        transition(session, job_id, to_state)

    assert (raised.value.from_state, raised.value.to_state) == (from_state, to_state)
    assert get_job(job_id).state == from_state.value
    assert len(list_events(job_id)) == 1


def test_a_new_attempt_counts_one_more_attempt() -> None:
    job_id = make_job(JobState.QUEUED)
    with db.session_scope() as session:
        done = transition(session, job_id, JobState.RUNNING, new_attempt=True)
    assert done.attempts == 1
    assert get_job(job_id).attempts == 1
    assert list_events(job_id)[-1].attempt == 1


def test_an_update_for_an_older_attempt_is_refused() -> None:
    job_id = make_job(JobState.RUNNING, attempts=2)
    with pytest.raises(StaleAttempt), db.session_scope() as session:
        transition(session, job_id, JobState.SUCCEEDED, attempt=1)
    assert get_job(job_id).state == JobState.RUNNING.value


def test_only_from_narrows_the_allowed_source_states() -> None:
    job_id = make_job(JobState.RETRYING)
    with pytest.raises(InvalidTransition), db.session_scope() as session:
        transition(session, job_id, JobState.RUNNING, only_from=frozenset({JobState.QUEUED}))


def test_a_transition_of_a_missing_job_raises_job_not_found() -> None:
    with pytest.raises(JobNotFound), db.session_scope() as session:
        transition(session, "no-such-job", JobState.RUNNING)


def test_a_concurrent_change_is_judged_again_on_the_fresh_row() -> None:
    """The first writer wins; the loser sees the new state, not a silent overwrite."""
    job_id = make_job(JobState.QUEUED)
    first, second = db.new_session(), db.new_session()
    try:
        transition(first, job_id, JobState.CANCELLED)
        first.commit()
        with pytest.raises(InvalidTransition) as raised:
            transition(second, job_id, JobState.RUNNING, new_attempt=True)
        assert raised.value.from_state == JobState.CANCELLED
    finally:
        first.close()
        second.rollback()
        second.close()
    assert get_job(job_id).state == JobState.CANCELLED.value


def test_progress_events_take_the_next_seq_without_changing_state() -> None:
    job_id = make_job(JobState.RUNNING, attempts=1)
    with db.session_scope() as session:
        seq = append_event(
            session, job_id, "progress", values={"progress": 40}, data={"percent": 40}
        )
    job = get_job(job_id)
    assert (seq, job.progress, job.state) == (2, 40, "running")
    assert list_events(job_id)[-1].kind == "progress"
