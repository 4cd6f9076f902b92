"""Many jobs' starts and outcomes applied together, with a handful of statements.

The common case — a message sent for the job's current attempt starts it; a running
attempt finishes — takes a fast path: on PostgreSQL one call of the server-side function
``jobstack_apply_changes`` (migration 0008) for the whole batch, committed on its own
(:mod:`app.recording.batch_postgres` builds its arguments); elsewhere one locking read for
the batch, then one multi-row UPDATE per shape of change and one multi-row INSERT of
events. Every other case (no row yet, a redelivery, a requested cancellation, a duplicate
tick, a webhook to queue, two changes to one job in the same batch) goes, in order,
through the general path, the one-job functions of :mod:`app.recording.attempts`, inside
a savepoint, so its failure is its own.

The rule for a start and an outcome is thus written three times: here, in
:mod:`app.recording.attempts` and in migration 0008's function. Change them together;
``tests/unit/test_recording_rules.py`` fails when they disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Row, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from app.cron import DUPLICATE_TICK_OPTION
from app.errors import InvalidTransition, RecordingError, StaleAttempt
from app.messages import attempts_made
from app.models import Job, JobEvent
from app.recording.attempts import record_outcome, start_attempt, start_data, start_values
from app.recording.batch_postgres import apply_common, function_applies
from app.recording.changes import ChangeResult, RecordOutcome, StartAttempt, StateChange
from app.recording.group_commit import ItemOutcome, PartlyCommitted
from app.states import TERMINAL_STATES, JobState, is_allowed
from app.timeutil import utcnow
from app.webhooks import enqueue_delivery
from app.workers import worker_id

JOBS: Table = Job.__table__  # type: ignore[assignment]
EVENTS: Table = JobEvent.__table__  # type: ignore[assignment]
STARTABLE = frozenset({JobState.QUEUED, JobState.RETRYING})


def apply_changes(
    session: Session, changes: Sequence[StateChange]
) -> list[ItemOutcome[ChangeResult]]:
    """Apply ``changes``; one outcome per change, in order.

    The caller commits the session's transaction; on PostgreSQL the common cases have
    already committed on their own by then (in one statement, one round trip).
    """
    # Every slot is filled below; None is also the outcome of a recorded RecordOutcome.
    outcomes: list[ItemOutcome[ChangeResult]] = [None] * len(changes)
    per_job = Counter(change.job_id for change in changes)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        for index in _apply_common_portable(session, changes, per_job, outcomes):
            outcomes[index] = _one_by_one(session, changes[index])
        return outcomes
    general = _apply_common_postgres(session, changes, per_job, outcomes)
    committed = {i: outcomes[i] for i in range(len(changes)) if i not in set(general)}
    try:
        for index in general:
            outcomes[index] = _one_by_one(session, changes[index])
    except Exception as error:
        # The common cases are already committed: applying them again would find their
        # jobs moved, and skip messages whose start is recorded.
        raise PartlyCommitted(committed, error) from error
    return outcomes


def _apply_common_postgres(
    session: Session,
    changes: Sequence[StateChange],
    per_job: Counter[str],
    outcomes: list[ItemOutcome[ChangeResult]],
) -> list[int]:
    """The common cases, server-side and committed in one round trip; returns the
    indexes left over (for a transaction of their own)."""
    starts: list[tuple[int, StartAttempt]] = []
    finishes: list[tuple[int, RecordOutcome]] = []
    general: list[int] = []
    for index, change in enumerate(changes):
        if per_job[change.job_id] > 1:
            general.append(index)
        elif isinstance(change, StartAttempt):
            if change.message.options.get(DUPLICATE_TICK_OPTION):
                general.append(index)
            else:
                starts.append((index, change))
        elif is_allowed(JobState.RUNNING, change.to_state) and function_applies(change):
            finishes.append((index, change))
        else:
            general.append(index)
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    done = apply_common(driver, starts, finishes, now=utcnow(), worker=worker_id())
    for index, _ in starts:
        if index in done.attempts:
            outcomes[index] = done.attempts[index]
    general.extend(index for index, _ in (*starts, *finishes) if not done.applied(index))
    # The general path goes in submission order.
    return sorted(general)


def _apply_common_portable(
    session: Session,
    changes: Sequence[StateChange],
    per_job: Counter[str],
    outcomes: list[ItemOutcome[ChangeResult]],
) -> list[int]:
    """The common cases from one locking read and multi-row statements; returns the
    indexes left over."""
    rows = _lock_rows(session, list(per_job))
    writes = _Writes()
    general: list[int] = []
    for index, change in enumerate(changes):
        row = rows.get(change.job_id)
        if per_job[change.job_id] > 1 or row is None or not writes.take(change, row):
            general.append(index)
            continue
        outcomes[index] = writes.result_of(change)
    writes.flush(session)
    return general


def _lock_rows(session: Session, job_ids: list[str]) -> dict[str, Any]:
    """The rows of ``job_ids``, locked until commit (SQLite holds the whole database
    from BEGIN IMMEDIATE), so what is decided from them still holds when written."""
    statement = (
        select(
            JOBS.c.id,
            JOBS.c.state,
            JOBS.c.attempts,
            JOBS.c.cancel_requested_at,
            JOBS.c.last_event_seq,
            JOBS.c.callback_url,
        )
        .where(JOBS.c.id.in_(job_ids))
        .order_by(JOBS.c.id)
        .with_for_update()
    )
    return {row.id: row for row in session.connection().execute(statement)}


class _Writes:
    """The common-case changes of a batch, grouped into multi-row statements."""

    def __init__(self) -> None:
        self._now = utcnow()
        self._worker = worker_id()
        self._updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._attempts: dict[str, int] = {}
        self.webhooks: list[str] = []

    def take(self, change: StateChange, row: Row[Any]) -> bool:
        """Queue ``change`` if it is the common case for ``row``; False otherwise."""
        state = JobState(row.state)
        if isinstance(change, StartAttempt):
            message = change.message
            if (
                state not in STARTABLE
                or row.cancel_requested_at is not None
                or message.options.get(DUPLICATE_TICK_OPTION)
                or attempts_made(message) != row.attempts
            ):
                return False
            attempt = row.attempts + 1
            data = start_data(
                self._worker, redelivered=change.redelivered, sent_after=row.attempts, deaths=0
            )
            self._queue(
                row,
                JobState.RUNNING,
                attempt,
                start_values(self._now, self._worker),
                "started",
                data,
            )
            self._attempts[row.id] = attempt
            return True
        if state is not JobState.RUNNING or row.attempts != change.attempt:
            return False
        if not is_allowed(state, change.to_state):
            return False
        self._queue(
            row, change.to_state, row.attempts, change.values, change.to_state.value, change.data
        )
        if change.to_state in TERMINAL_STATES and row.callback_url:
            self.webhooks.append(row.id)
        return True

    def result_of(self, change: StateChange) -> ChangeResult:
        return self._attempts[change.job_id] if isinstance(change, StartAttempt) else None

    def _queue(
        self,
        row: Row[Any],
        to_state: JobState,
        attempt: int,
        values: dict[str, Any],
        kind: str,
        data: dict[str, Any] | None,
    ) -> None:
        seq = row.last_event_seq + 1
        changes = {
            **values,
            "state": to_state.value,
            "attempts": attempt,
            "updated_at": self._now,
            "last_event_seq": seq,
        }
        shape = tuple(sorted(changes))
        self._updates.setdefault(shape, []).append(
            {
                **{f"new_{k}": v for k, v in changes.items()},
                "match_id": row.id,
                "match_state": row.state,
                "match_attempts": row.attempts,
            }
        )
        self._events.append(
            {
                "job_id": row.id,
                "seq": seq,
                "at": self._now,
                "kind": kind,
                "from_state": row.state,
                "to_state": to_state.value,
                "attempt": attempt,
                "data": data,
            }
        )

    def flush(self, session: Session) -> None:
        connection = session.connection()
        for shape, params in self._updates.items():
            statement = (
                update(JOBS)
                .where(
                    JOBS.c.id == bindparam("match_id"),
                    JOBS.c.state == bindparam("match_state"),
                    JOBS.c.attempts == bindparam("match_attempts"),
                )
                .values({column: bindparam(f"new_{column}") for column in shape})
            )
            changed = connection.execute(statement, params).rowcount
            if connection.dialect.supports_sane_multi_rowcount and changed != len(params):
                # The rows are locked: nothing can have moved them since they were read.
                raise RecordingError(f"group update changed {changed} of {len(params)} jobs")
        if self._events:
            connection.execute(insert(EVENTS), self._events)
        for job_id in self.webhooks:
            enqueue_delivery(session, job_id)


def _one_by_one(session: Session, change: StateChange) -> ItemOutcome[ChangeResult]:
    """The general path for one change, in a savepoint: its failure undoes only itself."""
    try:
        with session.begin_nested():
            if isinstance(change, StartAttempt):
                return start_attempt(session, change.message, change.redelivered)
            record_outcome(
                session, change.job_id, change.attempt, change.to_state, change.values, change.data
            )
            return None
    except (StaleAttempt, InvalidTransition) as error:
        return error
