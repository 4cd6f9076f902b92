"""jobstack: ``dramatiq actors -p 1 -t 8`` on the local RabbitMQ, its record in PostgreSQL
(database ``bench_jobstack``) or SQLite (a temporary file), every state change recorded.

    python -m bench.peers.runners.jobstack_runner -n 5000 --backend postgres   (project venv)

Started as the peers are: N ``diagnostics.noop`` jobs submitted and published first, the
worker started, the time from the first job started to the last recorded ``succeeded``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from bench import drain
from bench.peers.runners import common

DATABASE = "bench_jobstack"
STARTED = "SELECT count(*) FROM jobs WHERE state <> 'queued'"
FINISHED = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"


def _database(backend: str, scratch: Path) -> tuple[str, Callable[[str], int]]:
    """The SQLAlchemy URL of an empty database, and a counter reading it."""
    if backend == "sqlite":
        path = scratch / "bench.db"
        connection = sqlite3.connect(path, isolation_level=None)

        def read(sql: str) -> int:
            return int(connection.execute(sql).fetchone()[0])

        return f"sqlite:///{path}", read
    url = common.fresh_database(DATABASE)
    return url.replace("postgresql://", "postgresql+psycopg://", 1), common.postgres_counter(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--jobs", type=int, default=5000)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    arguments = parser.parse_args()
    total = arguments.jobs
    scratch = Path(tempfile.mkdtemp(prefix="bench-jobstack-"))
    url, count = _database(arguments.backend, scratch)
    drain.fill_backlog(url, total)
    dramatiq = str(Path(sys.executable).with_name("dramatiq"))
    worker = common.start(
        [dramatiq, "actors", "-p", "1", "-t", "8"],
        scratch / "worker.log",
        {"JOBSTACK_DATABASE_URL": url},
    )
    try:
        common.run(
            f"jobstack-{arguments.backend}",
            version("jobstack"),
            total,
            lambda: common.time_drain(
                lambda: count(STARTED), lambda: count(FINISHED), total, worker
            ),
        )
    finally:
        common.stop(worker)


if __name__ == "__main__":
    main()
