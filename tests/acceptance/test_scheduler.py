"""Two real ``periodiq actors`` schedulers and a real worker: one job per cron tick."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app import db
from app.models import Job
from tests.acceptance.conftest import BIN, REPO, WorkerProcess
from tests.support.waiting import wait_for_state, wait_until

TICK_MODULE = "tests.support.periodic_actors"


@pytest.fixture
def two_schedulers(clean_db: str, tmp_path: Path) -> Iterator[list[Path]]:
    logs = [tmp_path / f"scheduler-{n}.log" for n in (1, 2)]
    processes = []
    for log in logs:
        with log.open("ab") as out:
            processes.append(
                subprocess.Popen(
                    [str(BIN / "periodiq"), "actors", TICK_MODULE],
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    yield logs
    for process in processes:
        process.terminate()
        process.wait(10)


def _ticks() -> list[Job]:
    with db.session_scope() as session:
        return list(session.scalars(select(Job).where(Job.actor == "tests.tick")))


SENT = re.compile(r"Scheduling Actor\(tests\.tick\) at (\d{4}-\d\d-\d\d \d\d:\d\d):\d\d")


def _minutes_sent(log: Path) -> set[str]:
    return set(SENT.findall(log.read_text()))


def test_two_schedulers_make_exactly_one_job_for_a_tick(
    start_worker: Callable[..., WorkerProcess], two_schedulers: list[Path]
) -> None:
    worker = start_worker(modules=(TICK_MODULE,))

    def common_minute() -> str | None:
        first, second = (_minutes_sent(log) for log in two_schedulers)
        return min(first & second, default=None)

    # Each scheduler sends at start-up and then at every minute boundary.
    minute = wait_until(common_minute, 90, "both schedulers to send the same tick")
    key = f"cron:tests.tick:{minute.replace(' ', 'T')}:00+00:00"

    def tick_job() -> Job | None:
        return next((job for job in _ticks() if job.idempotency_key == key), None)

    job = wait_until(tick_job, 20, f"the job of tick {key}")
    done = wait_for_state(job.id, timeout=20)
    assert done.result == "tock"
    # The other scheduler's message reached the worker and was skipped as a duplicate.
    wait_until(
        lambda: f"a duplicate of cron tick job {job.id}" in worker.log.read_text(),
        15,
        "the duplicate tick to be skipped",
    )
    assert [j.id for j in _ticks() if j.idempotency_key == key] == [job.id]
