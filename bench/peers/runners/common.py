"""What every peer runner shares; only the standard library and psycopg (which every
peer venv has), so it runs under any of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[3]
POSTGRES_ADMIN = os.environ.get(
    "JOBSTACK_BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POLL_SECONDS = 0.05


def database_url(name: str) -> str:
    return f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}"


def fresh_database(name: str) -> str:
    """Drop and create database ``name``; its libpq URL."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    return database_url(name)


def count(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def start(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a worker in its own process group, output to ``log``, from the repo root."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group (a warm shutdown), SIGKILL after 60 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def time_drain(
    url: str,
    started_sql: str,
    finished_sql: str,
    total: int,
    worker: subprocess.Popen[bytes],
    timeout: float = 900,
) -> tuple[float, int]:
    """Seconds from the first poll that sees a job started (``started_sql`` > 0) to the
    first that sees ``total`` finished rows (``finished_sql``), and that count.

    One connection, polled every 50 ms, as drain.py polls RabbitMQ: worker start-up is
    excluded, the filling was done before the worker started.
    """
    deadline = time.monotonic() + timeout
    began: float | None = None
    with psycopg.connect(url, autocommit=True) as connection:

        def read(sql: str) -> int:
            row = connection.execute(sql).fetchone()
            assert row is not None
            return int(row[0])

        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            now = time.monotonic()
            if began is None and read(started_sql) > 0:
                began = now
            if began is not None:
                finished = read(finished_sql)
                if finished >= total:
                    return time.monotonic() - began, finished
            time.sleep(POLL_SECONDS)
    raise TimeoutError(f"the jobs were not all finished within {timeout}s")


def run(
    peer: str,
    version: str,
    total: int,
    measure: Callable[[], tuple[float, int]],
) -> None:
    """Print the one JSON line the bench reads (rows_checked must equal ``total``)."""
    seconds, rows = measure()
    print(
        json.dumps(
            {
                "peer": peer,
                "version": version,
                "jobs": total,
                "seconds": seconds,
                "jobs_per_second": total / seconds,
                "rows_checked": rows,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )
