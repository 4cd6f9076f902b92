"""The rule for starting and finishing an attempt is written three times: the general path
(app/recording/attempts.py), the portable batch path (app/recording/batch.py) and the
server-side function of migration 0008 (PostgreSQL). These tests fail when they disagree.
"""

from __future__ import annotations

import importlib
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Table

from app import db
from app.jobs import get_job, list_events
from app.models import Job
from app.recording.attempts import record_outcome, start_attempt, start_data, start_values
from app.recording.batch import apply_changes
from app.recording.batch_postgres import FUNCTION_VALUE_COLUMNS
from app.recording.changes import RecordOutcome, StartAttempt
from app.states import JobState
from app.timeutil import utcnow
from tests.support.factories import delivered_message, make_job

FUNCTION_SQL: str = importlib.import_module(
    "app.migrations.versions.0008_state_change_function"
).APPLY_CHANGES
JOBS: Table = Job.__table__  # type: ignore[assignment]
COLUMNS = [column.key for column in JOBS.columns]
#: What every transition sets, besides the columns of its kind (app/transitions.py).
TRANSITION_COLUMNS = {"state", "attempts", "updated_at", "last_event_seq"}
#: Columns whose value is the moment of the change: equal only in being set or not.
MOMENTS = {"updated_at", "started_at"}


def _set_columns(update_sql: str) -> set[str]:
    """The columns an ``UPDATE jobs SET … `` clause assigns."""
    return set(re.findall(r"(?:^|,)\s*(\w+)\s*=", update_sql.strip()))


def _start_update() -> str:
    match = re.search(r"UPDATE jobs SET (.*?)\n\s*FROM old", FUNCTION_SQL, re.S)
    assert match, "the function's start UPDATE"
    return match.group(1)


def _outcome_update() -> str:
    outcomes_loop = FUNCTION_SQL.split("jsonb_array_elements(outcomes)", 1)[1]
    match = re.search(r"UPDATE jobs SET(.*?)\n\s*WHERE", outcomes_loop, re.S)
    assert match, "the function's outcome UPDATE"
    return match.group(1)


def test_the_function_sets_the_columns_of_a_start_that_python_sets() -> None:
    python_columns = set(start_values(utcnow(), "host:1")) | TRANSITION_COLUMNS
    assert _set_columns(_start_update()) == python_columns


def test_the_functions_start_event_carries_the_data_python_writes() -> None:
    match = re.search(r"json_build_object\((.*?)\)\n", FUNCTION_SQL, re.S)
    assert match, "the start event's json_build_object"
    keys = re.findall(r"'(\w+)',", match.group(1))
    assert keys == list(start_data("host:1", redelivered=False, sent_after=0, deaths=0))


def test_the_function_knows_every_column_an_outcome_may_set_through_it() -> None:
    clause = _outcome_update()
    pairs = re.findall(r"(\w+) = CASE WHEN v \? '(\w+)'", clause)
    assert all(column == key for column, key in pairs), pairs
    assert {key for _, key in pairs} == FUNCTION_VALUE_COLUMNS
    outcome_columns = FUNCTION_VALUE_COLUMNS | {"result"} | TRANSITION_COLUMNS - {"attempts"}
    assert _set_columns(clause) == outcome_columns
    assert outcome_columns <= set(COLUMNS)


def _written(job_id: str) -> dict[str, Any]:
    """The job's row and last event, moments reduced to whether they are set."""
    job = get_job(job_id)
    row = {
        column: getattr(job, column)
        for column in COLUMNS
        if column not in MOMENTS | {"id", "created_at"}
    }
    row.update({column: getattr(job, column) is not None for column in MOMENTS})
    event = list_events(job_id)[-1]
    row["event"] = (event.seq, event.kind, event.from_state, event.to_state, event.attempt)
    row["event_data"] = event.data
    return row


def test_a_start_writes_the_same_row_and_event_on_both_paths(clean_db: str) -> None:
    general, batched = make_job(JobState.QUEUED), make_job(JobState.QUEUED)
    with db.session_scope() as session:
        assert start_attempt(session, delivered_message(general), redelivered=False) == 1
    with db.session_scope() as session:  # The function on PostgreSQL, multi-row elsewhere.
        assert apply_changes(
            session, [StartAttempt(delivered_message(batched), redelivered=False)]
        ) == [1]
    assert _written(general) == _written(batched)


LATER = utcnow().replace(microsecond=0) + timedelta(minutes=5)
OUTCOMES: dict[str, tuple[JobState, dict[str, Any], dict[str, Any] | None]] = {
    "succeeded": (JobState.SUCCEEDED, {"result": {"z": 1, "a": [None]}, "progress": 100}, None),
    "retrying": (
        JobState.RETRYING,
        {
            "error_type": "ValueError",
            "error_message": "bad",
            "error_traceback": "Traceback …",
            "run_at": LATER,
            "published_at": LATER,
        },
        None,
    ),
    "failed": (
        JobState.FAILED,
        {"error_type": "Boom", "error_message": "no", "finished_at": LATER},
        {"reason": "permanent", "dead_lettered": True, "error_type": "Boom"},
    ),
}


@pytest.mark.parametrize("kind", sorted(OUTCOMES))
def test_an_outcome_writes_the_same_row_and_event_on_both_paths(clean_db: str, kind: str) -> None:
    to_state, values, data = OUTCOMES[kind]
    general, batched = (make_job(JobState.RUNNING, attempts=1) for _ in range(2))
    with db.session_scope() as session:
        record_outcome(session, general, 1, to_state, values, data)
    with db.session_scope() as session:
        outcome = RecordOutcome(batched, 1, to_state, values, data)
        assert apply_changes(session, [outcome]) == [None]
    assert _written(general) == _written(batched)
    assert get_job(batched).state == to_state.value
