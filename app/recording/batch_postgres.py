"""The common case of a batch of state changes on PostgreSQL: one statement, one round trip.

Every start and outcome of the batch goes to the server-side function
``jobstack_apply_changes`` (migration 0008) in a single call. Per change it locks the
job's row, moves it only if it is in the expected state and attempt, and appends the
event. The call runs in autocommit, so it is its own transaction and is committed by the
time it returns: a thread is woken only after that. A change the function did not apply
(the job moved, has no row, or finishes with a webhook to queue) wrote nothing and is
left to the general path, which runs in a transaction of its own after this one: the
jobs of the two are different.

Before, psycopg's pipeline mode sent one statement per change and a COMMIT, and waited
for the server six times per batch; in a worker process, where the committer competes for
the GIL with every worker thread, each wait costs more than its share of the database's
time. Now a batch is one round trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from sqlalchemy.exc import DBAPIError

from app.errors import RecordingError
from app.messages import attempts_made
from app.recording.changes import RecordOutcome, StartAttempt
from app.states import TERMINAL_STATES

#: Columns an outcome may set through the function (besides ``result``); an outcome
#: setting any other column takes the general path.
FUNCTION_VALUE_COLUMNS = frozenset(
    {
        "progress",
        "finished_at",
        "run_at",
        "published_at",
        "error_type",
        "error_message",
        "error_traceback",
    }
)

_CALL = "SELECT idx, attempt FROM jobstack_apply_changes(%s, %s, %s, %s)"


def function_applies(change: RecordOutcome) -> bool:
    """Whether the function can record this outcome (it knows every column it sets)."""
    return all(column == "result" or column in FUNCTION_VALUE_COLUMNS for column in change.values)


class Applied:
    """What the function did: per change, whether it was applied."""

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
    """Try every change as the common case, committed in one statement; returns what
    applied."""
    if not starts and not outcomes:
        return Applied()
    if driver.info.transaction_status != TransactionStatus.IDLE:
        raise RecordingError("the common path needs a connection outside any transaction")
    start_rows = [
        {
            "i": index,
            "id": change.job_id,
            "sent_after": attempts_made(change.message),
            "redelivered": change.redelivered,
        }
        for index, change in starts
    ]
    outcome_rows = [_outcome_row(index, change) for index, change in outcomes]
    arguments = [Jsonb(start_rows, dumps=_dumps), Jsonb(outcome_rows, dumps=_dumps), now, worker]
    driver.autocommit = True
    try:
        rows = driver.execute(_CALL, arguments).fetchall()
    except psycopg.Error as error:
        # As SQLAlchemy's own error, so that the group committer tells an outage
        # (OperationalError: reconnect and wait) from a bad change (split the batch).
        raise DBAPIError.instance(_CALL, None, error, psycopg.Error) from error
    finally:
        if not driver.closed:
            driver.autocommit = False

    done = Applied()
    start_indexes = {index for index, _ in starts}
    for index, attempt in rows:
        if index in start_indexes:
            done.attempts[index] = int(attempt)
        else:
            done.outcomes.add(index)
    return done


def _outcome_row(index: int, change: RecordOutcome) -> dict[str, Any]:
    values = dict(change.values)
    row: dict[str, Any] = {
        "i": index,
        "id": change.job_id,
        "attempt": change.attempt,
        "to_state": change.to_state.value,
        "terminal": change.to_state in TERMINAL_STATES,
        "values": values,
    }
    # JSON columns travel as text: through jsonb their keys would be reordered.
    if "result" in values:
        result = values.pop("result")
        row["result_text"] = None if result is None else json.dumps(result)
    if change.data is not None:
        row["data_text"] = json.dumps(change.data)
    return row


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
