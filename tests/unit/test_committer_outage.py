"""The worker's group commit across a cut database connection (on PostgreSQL, whatever
the suite's backend: SQLite has no server connection to cut)."""

from __future__ import annotations

import psycopg
from dramatiq import Message
from dramatiq.broker import MessageProxy

from app import db
from app.jobs import get_job
from app.recording.batch import apply_changes
from app.recording.changes import ChangeResult, StartAttempt, StateChange
from app.recording.group_commit import GroupCommitter
from tests.support.factories import make_job
from tests.support.services import postgres_admin_url


def _start(job_id: str) -> StartAttempt:
    message: Message[None] = Message(
        queue_name="default", actor_name="t.x", args=(), kwargs={}, options={}, message_id=job_id
    )
    return StartAttempt(MessageProxy(message), redelivered=False)


def test_a_committer_whose_connection_was_cut_reconnects_and_applies_the_change(
    postgres: str,
) -> None:
    committer: GroupCommitter[StateChange, ChangeResult] = GroupCommitter(
        apply_changes, name="test-outage"
    )
    try:
        assert committer.run(_start(make_job()), give_up_after=5) == 1  # Connected.

        # What a database restart does to the committer's long-lived connection.
        with psycopg.connect(postgres_admin_url(), autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [postgres],
            ).fetchall()
        assert cut, "no connection to cut"
        # The pool's idle connections were cut too; they are not this test's subject
        # (test_db covers them): start the pool afresh, the committer keeps its own.
        db.get_engine().dispose()

        job = make_job()
        assert committer.run(_start(job), give_up_after=10) == 1
        assert (get_job(job).state, get_job(job).attempts) == ("running", 1)
    finally:
        committer.stop()
