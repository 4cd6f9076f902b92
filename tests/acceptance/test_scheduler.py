"""Two real ``periodiq actors`` schedulers and a real worker: one job per cron tick."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app import db
from app.models import Job
from tests.acceptance.conftest import BIN, REPO, WorkerProcess
from tests.support.waiting import wait_until

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


def test_two_schedulers_make_exactly_one_job_for_a_tick(
    start_worker: Callable[..., WorkerProcess], two_schedulers: list[Path]
) -> None:
    worker = start_worker(modules=(TICK_MODULE,))

    # The next minute boundary: up to a minute away.
    [job] = wait_until(_ticks, 90, "the first tick's job")

    def both_sent() -> bool:
        return all("Scheduling Actor(" in log.read_text() for log in two_schedulers)

    wait_until(both_sent, 15, "both schedulers to send the tick")
    done = wait_until(
        lambda: next((j for j in _ticks() if j.state == "succeeded"), None), 20, "the tick to run"
    )
    assert done.id == job.id and done.result == "tock"
    # The later scheduler's message reached the worker and was skipped as a duplicate.
    wait_until(
        lambda: f"a duplicate of cron tick job {job.id}" in worker.log.read_text(),
        15,
        "the duplicate tick to be skipped",
    )
    assert done.idempotency_key and done.idempotency_key.startswith("cron:tests.tick:")
    assert len(_ticks()) == 1
