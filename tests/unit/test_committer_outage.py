"""The worker's group commit across a cut database connection (on PostgreSQL, whatever
the suite's backend: SQLite has no server connection to cut)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy

from app import db
from app.jobs import get_job
from app.migrations import migrate
from app.recording.batch import StartAttempt, StateChange, apply_changes
from app.recording.group_commit import GroupCommitter
from tests.support.factories import make_job
from tests.support.services import fresh_postgres_database, postgres_admin_url

OUTAGE_DATABASE = "jobstack_test_outage"


@pytest.fixture
def postgres(database_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database as the process's database, for one test."""
    url = fresh_postgres_database(OUTAGE_DATABASE)
    migrate.upgrade(url)
    db.configure(url)
    try:
        yield postgres_admin_url()
    finally:
        db.configure(database_url)
        with psycopg.connect(postgres_admin_url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {OUTAGE_DATABASE} WITH (FORCE)")


def _start(job_id: str) -> StartAttempt:
    message: Message[None] = Message(
        queue_name="default", actor_name="t.x", args=(), kwargs={}, options={}, message_id=job_id
    )
    return StartAttempt(MessageProxy(message), redelivered=False)


def test_a_committer_whose_connection_was_cut_reconnects_and_applies_the_change(
    postgres: str,
) -> None:
    committer: GroupCommitter[StateChange, int | None] = GroupCommitter(
        apply_changes, name="test-outage"
    )
    try:
        assert committer.run(_start(make_job()), give_up_after=5) == 1  # Connected.

        # What a database restart does to the committer's long-lived connection.
        with psycopg.connect(postgres, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [OUTAGE_DATABASE],
            ).fetchall()
        assert cut, "no connection to cut"

        job = make_job()
        assert committer.run(_start(job), give_up_after=10) == 1
        assert (get_job(job).state, get_job(job).attempts) == ("running", 1)
    finally:
        committer.stop()
