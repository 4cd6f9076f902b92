"""The common case of a batch of state changes on PostgreSQL, in one round trip.

Each change is one statement that locks the job's row, moves it only if it is in the
expected state and attempt, and appends the event, all server-side; the statements of a
batch and their COMMIT are sent together in psycopg's pipeline mode. A change whose
statement matched no row (the job moved, has no row, or finishes with a webhook to
queue in the same transaction) writes nothing and is left to the general path, which
runs in a transaction of its own after this one: the jobs of the two are different.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Json

from app.messages import attempts_made
from app.states import TERMINAL_STATES

if TYPE_CHECKING:
    from app.state_batch import RecordOutcome, StartAttempt

#: Columns holding JSON, which psycopg must be told to send as JSON.
JSON_COLUMNS = frozenset({"result"})

_EVENT_COLUMNS = "job_id, seq, at, kind, from_state, to_state, attempt, data"

_START = f"""
WITH old AS (
    SELECT id, state FROM jobs WHERE id = %(id)s FOR UPDATE
), moved AS (
    UPDATE jobs SET state = 'running', attempts = jobs.attempts + 1,
        started_at = %(now)s, worker_id = %(worker)s, finished_at = NULL,
        updated_at = %(now)s, last_event_seq = jobs.last_event_seq + 1
    FROM old
    WHERE jobs.id = old.id AND old.state IN ('queued', 'retrying')
        AND jobs.attempts = %(sent_after)s AND jobs.cancel_requested_at IS NULL
    RETURNING jobs.id, old.state AS from_state, jobs.attempts, jobs.last_event_seq
)
INSERT INTO job_events ({_EVENT_COLUMNS})
SELECT id, last_event_seq, %(now)s, 'started', from_state, 'running', attempts, %(data)s
FROM moved
RETURNING attempt
"""


@functools.cache
def _outcome_statement(columns: tuple[str, ...]) -> str:
    assignments = "".join(f"{column} = %(v_{column})s, " for column in columns)
    return f"""
WITH moved AS (
    UPDATE jobs SET {assignments}state = %(to_state)s, updated_at = %(now)s,
        last_event_seq = last_event_seq + 1
    WHERE id = %(id)s AND state = 'running' AND attempts = %(attempt)s
        AND (callback_url IS NULL OR NOT %(terminal)s)
    RETURNING id, attempts, last_event_seq
)
INSERT INTO job_events ({_EVENT_COLUMNS})
SELECT id, last_event_seq, %(now)s, %(to_state)s, 'running', %(to_state)s, attempts, %(data)s
FROM moved
RETURNING seq
"""


class Applied:
    """What the pipelined statements did: per change, whether it was applied."""

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}  # index of a start -> the attempt it started
        self.outcomes: set[int] = set()  # indexes of recorded outcomes

    def applied(self, index: int) -> bool:
        return index in self.attempts or index in self.outcomes


def apply_common(
    driver: psycopg.Connection[Any],
    starts: Sequence[tuple[int, StartAttempt]],
    outcomes: Sequence[tuple[int, RecordOutcome]],
    *,
    now: datetime,
    worker: str,
) -> Applied:
    """Try every change as the common case, in one round trip; returns what applied."""
    done = Applied()
    by_shape: dict[tuple[str, ...], list[tuple[int, RecordOutcome]]] = {}
    for index, outcome in outcomes:
        by_shape.setdefault(tuple(sorted(outcome.values)), []).append((index, outcome))

    cursors: list[tuple[psycopg.Cursor[Any], list[int], bool]] = []
    with driver.pipeline():
        if starts:
            cursor = driver.cursor()
            cursor.executemany(
                _START,
                [_start_params(change, now, worker) for _, change in starts],
                returning=True,
            )
            cursors.append((cursor, [index for index, _ in starts], True))
        for shape, group in by_shape.items():
            cursor = driver.cursor()
            cursor.executemany(
                _outcome_statement(shape),
                [_outcome_params(change, now) for _, change in group],
                returning=True,
            )
            cursors.append((cursor, [index for index, _ in group], False))
        # Committed in the same flight: a thread is woken only after the group commit
        # has returned, so nothing is acked before this COMMIT succeeded.
        driver.commit()

    for cursor, indexes, is_start in cursors:
        for index, row in zip(indexes, _rows(cursor), strict=True):
            if row is None:
                continue  # Not the common case: nothing was written.
            if is_start:
                done.attempts[index] = int(row[0])
            else:
                done.outcomes.add(index)
        cursor.close()
    return done


def _rows(cursor: psycopg.Cursor[Any]) -> list[tuple[Any, ...] | None]:
    """The one row (or none) each statement of an ``executemany`` returned."""
    rows = []
    for result in cursor.results():
        rows.append(result.fetchone())
    return rows


def _start_params(change: StartAttempt, now: datetime, worker: str) -> dict[str, Any]:
    sent_after = attempts_made(change.message)
    return {
        "id": change.job_id,
        "now": now,
        "worker": worker,
        "sent_after": sent_after,
        "data": Json(
            {
                "worker_id": worker,
                "redelivered": change.redelivered,
                "sent_after": sent_after,
                "deaths": 0,
            }
        ),
    }


def _outcome_params(change: RecordOutcome, now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {
        f"v_{column}": Json(value) if column in JSON_COLUMNS and value is not None else value
        for column, value in change.values.items()
    }
    params.update(
        id=change.job_id,
        now=now,
        attempt=change.attempt,
        to_state=change.to_state.value,
        terminal=change.to_state in TERMINAL_STATES,
        data=None if change.data is None else Json(change.data),
    )
    return params
