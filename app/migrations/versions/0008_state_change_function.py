"""a server-side function applying a batch of job starts and outcomes (PostgreSQL)

The worker's group commit hands a whole batch to ``jobstack_apply_changes`` in one
statement (app/recording/batch_postgres.py builds its arguments). For each start it locks
the job's row, moves it to ``running`` only if it is queued or retrying at the attempt
the message was sent after, with no cancellation requested, and appends the ``started``
event; for each outcome it moves a job running at that attempt to the new state, sets
the given columns and appends the event. It returns ``(idx, attempt)`` for every change
it applied; a change it did not apply wrote nothing. SQLite has no such function: its
batches take the portable path.

The same rule is written in Python twice: the general path (app/recording/attempts.py)
and the portable batch path (app/recording/batch.py). A change to what a start or an
outcome writes goes in all three (a new migration replacing this function);
tests/unit/test_recording_rules.py fails when they disagree.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# starts:   [{"i": index, "id": job id, "sent_after": attempts, "redelivered": bool}]
# outcomes: [{"i": index, "id": job id, "attempt": n, "to_state": state, "terminal": bool,
#             "data_text": event data as JSON text (absent: none),
#             "result_text": result as JSON text (absent: unchanged; null: NULL),
#             "values": {column: value} for the columns below (absent: unchanged)}]
# Ends each loop: the event was inserted (the change applied) or nothing was.
_REPORT_APPLIED = """        FROM moved
        RETURNING job_events.attempt INTO applied;
        IF FOUND THEN
            idx := (change->>'i')::integer;
            attempt := applied;
            RETURN NEXT;
        END IF;
    END LOOP;
"""

APPLY_CHANGES = f"""
CREATE OR REPLACE FUNCTION jobstack_apply_changes(
    starts jsonb, outcomes jsonb, at_now timestamptz, worker text
) RETURNS TABLE (idx integer, attempt integer)
LANGUAGE plpgsql AS $function$
DECLARE
    change jsonb;
    v jsonb;
    applied integer;
BEGIN
    FOR change IN SELECT value FROM jsonb_array_elements(starts) LOOP
        WITH old AS (
            SELECT jobs.id, jobs.state FROM jobs WHERE jobs.id = change->>'id' FOR UPDATE
        ), moved AS (
            UPDATE jobs SET state = 'running', attempts = jobs.attempts + 1,
                started_at = at_now, worker_id = worker, finished_at = NULL,
                updated_at = at_now, last_event_seq = jobs.last_event_seq + 1
            FROM old
            WHERE jobs.id = old.id AND old.state IN ('queued', 'retrying')
                AND jobs.attempts = (change->>'sent_after')::integer
                AND jobs.cancel_requested_at IS NULL
            RETURNING jobs.id, old.state AS from_state, jobs.attempts, jobs.last_event_seq
        )
        INSERT INTO job_events (job_id, seq, at, kind, from_state, to_state, attempt, data)
        SELECT moved.id, moved.last_event_seq, at_now, 'started', moved.from_state,
            'running', moved.attempts,
            json_build_object(
                'worker_id', worker,
                'redelivered', (change->>'redelivered')::boolean,
                'sent_after', (change->>'sent_after')::integer,
                'deaths', 0
            )
{_REPORT_APPLIED}
    FOR change IN SELECT value FROM jsonb_array_elements(outcomes) LOOP
        v := change->'values';
        WITH moved AS (
            UPDATE jobs SET
                result = CASE WHEN change ? 'result_text'
                    THEN (change->>'result_text')::json ELSE jobs.result END,
                progress = CASE WHEN v ? 'progress'
                    THEN (v->>'progress')::integer ELSE jobs.progress END,
                finished_at = CASE WHEN v ? 'finished_at'
                    THEN (v->>'finished_at')::timestamptz ELSE jobs.finished_at END,
                run_at = CASE WHEN v ? 'run_at'
                    THEN (v->>'run_at')::timestamptz ELSE jobs.run_at END,
                published_at = CASE WHEN v ? 'published_at'
                    THEN (v->>'published_at')::timestamptz ELSE jobs.published_at END,
                error_type = CASE WHEN v ? 'error_type'
                    THEN v->>'error_type' ELSE jobs.error_type END,
                error_message = CASE WHEN v ? 'error_message'
                    THEN v->>'error_message' ELSE jobs.error_message END,
                error_traceback = CASE WHEN v ? 'error_traceback'
                    THEN v->>'error_traceback' ELSE jobs.error_traceback END,
                state = change->>'to_state',
                updated_at = at_now,
                last_event_seq = jobs.last_event_seq + 1
            WHERE jobs.id = change->>'id' AND jobs.state = 'running'
                AND jobs.attempts = (change->>'attempt')::integer
                AND (jobs.callback_url IS NULL OR NOT (change->>'terminal')::boolean)
            RETURNING jobs.id, jobs.attempts, jobs.last_event_seq
        )
        INSERT INTO job_events (job_id, seq, at, kind, from_state, to_state, attempt, data)
        SELECT moved.id, moved.last_event_seq, at_now, change->>'to_state', 'running',
            change->>'to_state', moved.attempts, (change->>'data_text')::json
{_REPORT_APPLIED}END
$function$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPLY_CHANGES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS jobstack_apply_changes(jsonb, jsonb, timestamptz, text)"
        )
