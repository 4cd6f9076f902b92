"""A worker process killed before the shared commit of its claimed starts: nothing ran,
nothing was acked, and every message comes back (app.recording.claims)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from app import db
from app.jobs import get_job, list_events, submit
from app.outbox.publish import published_marks
from tests.acceptance.conftest import WorkerProcess
from tests.support import marking_actors
from tests.support.locks import all_jobs_held
from tests.support.rabbit import real_broker
from tests.support.waiting import wait_for_state, wait_until

#: Fewer than the worker prefetches (5 per thread, 2 threads): all are delivered at once.
JOBS = 6
MODULES = ("tests.support.marking_actors",)


def _ready() -> int:
    channel = real_broker().channel
    return int(channel.queue_declare("default", passive=True).method.message_count)


def _blocked_backends() -> int:
    """PostgreSQL sessions of this database waiting for a lock."""
    with db.get_engine().connect() as connection:
        return int(
            connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )


def _dying_with_its_client(url: str) -> dict[str, str]:
    """The worker's database URL, with PostgreSQL told to check every 200 ms that the
    client is still there: else a statement of the killed worker, waiting for the held
    rows, would still run and commit once they are released (a start committed after
    the crash, which the redelivery then counts as a lost attempt)."""
    if not url.startswith("postgresql"):
        return {}
    option = "options=-c%20client_connection_check_interval%3D200"
    return {"JOBSTACK_DATABASE_URL": f"{url}{'&' if '?' in url else '?'}{option}"}


def test_a_worker_killed_before_the_shared_commit_started_and_acked_nothing(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path, database_url: str
) -> None:
    marks = tmp_path / "marks"
    ids = [submit(marking_actors.mark, kwargs={"path": str(marks)}).id for _ in range(JOBS)]
    # Marked published now, not while the rows are held (the relay would send them again).
    published_marks.flush()
    wait_until(lambda: _ready() == JOBS, 10, "every message in the queue")

    with all_jobs_held():
        worker = start_worker(env=_dying_with_its_client(database_url), modules=MODULES)
        wait_until(lambda: _ready() == 0, 20, "every message delivered to the worker")
        # Its claims are handed to the committer, which waits for the rows.
        on_postgres = db.get_engine().dialect.name == "postgresql"
        if on_postgres:
            wait_until(_blocked_backends, 20, "the worker's commit to wait")
        else:
            time.sleep(1.0)  # SQLite: nothing to look at; a dead process holds nothing.
        worker.kill()
        if on_postgres:
            wait_until(
                lambda: _blocked_backends() == 0, 20, "PostgreSQL to drop the dead statement"
            )

    wait_until(lambda: _ready() == JOBS, 20, "every message back in the queue")
    assert not marks.exists()  # no actor ran
    for job_id in ids:
        job = get_job(job_id)
        assert (job.state, job.attempts) == ("queued", 0)
        assert "started" not in [event.kind for event in list_events(job_id)]

    start_worker(modules=MODULES)
    for job_id in ids:
        done = wait_for_state(job_id)
        # Never started before, so the redelivery is a first attempt, not a crash.
        assert (done.state, done.attempts) == ("succeeded", 1)
    assert sorted(marks.read_text().split()) == sorted(ids)  # each ran once
