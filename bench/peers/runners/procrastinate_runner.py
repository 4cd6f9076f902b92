"""Procrastinate peer: one worker process, concurrency 8, an async no-op task, PostgreSQL
(psycopg) as both the queue and the record.

    python -m bench.peers.runners.procrastinate_runner -n 5000    (under bench/.venvs/procrastinate)

The same module holds the worker's app (``procrastinate --app=...runner.app worker``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import procrastinate  # type: ignore[import-not-found,unused-ignore]

from bench.peers.runners import common

DATABASE = "bench_procrastinate"
QUEUE = "bench"
CONCURRENCY = 8

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=common.database_url(DATABASE))
)


# Async: the worker's concurrency runs async tasks on its event loop (its docs advise
# against concurrency with blocking synchronous tasks).
@app.task(name="noop", queue=QUEUE)  # type: ignore[untyped-decorator,unused-ignore]
async def noop() -> None:
    """A job that does nothing: what is measured is the machinery around it."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--jobs", type=int, default=5000)
    total = parser.parse_args().jobs
    url = common.fresh_database(DATABASE)
    with app.open():
        app.schema_manager.apply_schema()
        noop.batch_defer(*({} for _ in range(total)))  # One statement for the backlog.
    log = Path(tempfile.gettempdir()) / "bench-peer-procrastinate.log"
    worker = common.start(
        [
            sys.executable, "-m", "procrastinate", "--log-level", "warning",
            "--app=bench.peers.runners.procrastinate_runner.app",
            "worker", "--queues", QUEUE, "--concurrency", str(CONCURRENCY),
        ],
        log,
    )  # fmt: skip
    count = common.postgres_counter(url)
    try:
        common.run(
            "procrastinate",
            version("procrastinate"),
            total,
            lambda: common.time_drain(
                lambda: count("SELECT count(*) FROM procrastinate_jobs WHERE status <> 'todo'"),
                lambda: count("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"),
                total,
                worker,
            ),
        )
    finally:
        common.stop(worker)


if __name__ == "__main__":
    main()
