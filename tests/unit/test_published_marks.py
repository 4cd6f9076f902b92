"""``published_at`` is the moment RabbitMQ confirmed the message, and writing it never
waits for a row a worker holds (on PostgreSQL, whatever the suite's backend: SQLite locks
the whole database, so nothing there can deadlock)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import delete

from app import db
from app.jobs import get_job
from app.models import Job, JobEvent
from app.outbox.publish import PublishedMarks, mark_published
from app.timeutil import utcnow
from tests.support.factories import make_job
from tests.support.locks import job_row_held


def test_a_mark_skips_a_row_a_worker_holds_instead_of_waiting_for_it(postgres: str) -> None:
    held, free = make_job(), make_job()
    confirmed = utcnow() - timedelta(seconds=3)

    left: dict[str, datetime] = {}

    def mark() -> None:
        left.update(mark_published({held: confirmed, free: confirmed}))

    with job_row_held(held):  # as a worker's batch of state changes holds it
        marking = threading.Thread(target=mark)
        marking.start()
        marking.join(timeout=2)
        waited = marking.is_alive()
    marking.join()

    assert not waited  # it did not wait for the lock: it cannot be half of a deadlock
    assert left == {held: confirmed}
    assert get_job(free).published_at == confirmed
    assert get_job(held).published_at is None


def test_a_skipped_mark_is_written_later_with_the_moment_of_the_confirm(postgres: str) -> None:
    held = make_job()
    confirmed = utcnow() - timedelta(seconds=3)
    marks = PublishedMarks(interval=3600)  # flushed by hand below

    with job_row_held(held):
        marks.add({held: confirmed})
        marks.flush()
        assert get_job(held).published_at is None
    marks.flush()

    assert get_job(held).published_at == confirmed  # not the moment it was written


def test_a_job_already_marked_keeps_its_first_mark(clean_db: str) -> None:
    job = make_job()
    first = utcnow() - timedelta(seconds=5)
    assert mark_published({job: first}) == {}
    assert mark_published({job: utcnow()}) == {}  # a duplicate publish by the relay
    assert get_job(job).published_at == first


def test_a_mark_for_a_job_that_is_gone_is_not_kept(clean_db: str) -> None:
    job = make_job()
    with db.session_scope() as session:  # pruned or deleted meanwhile
        session.execute(delete(JobEvent).where(JobEvent.job_id == job))
        session.execute(delete(Job).where(Job.id == job))
    assert mark_published({job: utcnow()}) == {}
