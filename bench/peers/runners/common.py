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
from dataclasses import dataclass
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


#: What CPU per job is reported for: the worker (its whole process group) and the two
#: servers (every process of each, by its command name).
SERVERS = {"postgres": "postgres", "rabbitmq": "beam.smp"}


def _stat(pid: str) -> tuple[str, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # Gone meanwhile.
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, text.rsplit(")", 1)[1].split()


def cpu_seconds(worker: subprocess.Popen[bytes]) -> dict[str, float]:
    """CPU time (user + system) used so far by the worker's process group (with its
    reaped children) and by every PostgreSQL and RabbitMQ process, from /proc."""
    ticks = dict.fromkeys(("worker", *SERVERS), 0)
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
        stat = _stat(pid)
        if stat is None:
            continue
        name, fields = stat
        # After the command name: state is field 0, pgrp 2, utime 11, stime 12,
        # cutime 13, cstime 14.
        if int(fields[2]) == worker.pid:
            ticks["worker"] += sum(int(value) for value in fields[11:15])
            continue
        for server, command in SERVERS.items():
            if name == command:
                ticks[server] += int(fields[11]) + int(fields[12])
    return {key: value / os.sysconf("SC_CLK_TCK") for key, value in ticks.items()}


def peak_rss_mib(worker: subprocess.Popen[bytes]) -> float:
    """The largest peak resident set (VmHWM) among the worker's process group, in MiB."""
    peaks = [0.0]
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
        stat = _stat(pid)
        if stat is None or int(stat[1][2]) != worker.pid:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


@dataclass(frozen=True)
class Drain:
    seconds: float
    #: Finished rows (or messages) counted at the end: the check that every job ran.
    rows: int
    #: CPU seconds per component over the drain (see cpu_seconds).
    cpu: dict[str, float]
    peak_rss_mib: float


def postgres_counter(url: str) -> Callable[[str], int]:
    """``count(sql)`` over one autocommit connection, kept for the whole drain."""
    connection = psycopg.connect(url, autocommit=True)

    def read(sql: str) -> int:
        row = connection.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    return read


def time_drain(
    started: Callable[[], int],
    finished: Callable[[], int],
    total: int,
    worker: subprocess.Popen[bytes],
    timeout: float = 900,
) -> Drain:
    """From the first poll that sees a job started (``started()`` > 0) to the first that
    sees ``total`` finished (``finished()``), with the CPU used meanwhile.

    Polled every 50 ms over one connection, as drain.py polls RabbitMQ: worker start-up
    is excluded, the filling was done before the worker started.
    """
    deadline = time.monotonic() + timeout
    began: float | None = None
    cpu_before: dict[str, float] = {}
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        now = time.monotonic()
        if began is None and started() > 0:
            began = now
            cpu_before = cpu_seconds(worker)
        if began is not None:
            done = finished()
            if done >= total:
                seconds = time.monotonic() - began
                cpu_after = cpu_seconds(worker)
                cpu = {key: cpu_after[key] - cpu_before[key] for key in cpu_after}
                return Drain(seconds, done, cpu, peak_rss_mib(worker))
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"the jobs were not all finished within {timeout}s")


def run(peer: str, version: str, total: int, measure: Callable[[], Drain]) -> None:
    """Print the one JSON line the bench reads (rows_checked must equal ``total``)."""
    drain = measure()
    print(
        json.dumps(
            {
                "peer": peer,
                "version": version,
                "jobs": total,
                "seconds": drain.seconds,
                "jobs_per_second": total / drain.seconds,
                "rows_checked": drain.rows,
                "cpu_ms_per_job": {key: 1000 * value / total for key, value in drain.cpu.items()},
                "peak_rss_mib": drain.peak_rss_mib,
                "python": sys.version.split()[0],
            }
        ),
        flush=True,
    )
