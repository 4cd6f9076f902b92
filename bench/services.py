"""What every benchmark needs: a fresh database, processes to start and stop, and
readings of the servers (queue depth, commits, a process's peak memory)."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import psycopg

ROOT = Path(__file__).resolve().parents[1]
BROKER_URL = os.environ.get("JOBSTACK_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
POSTGRES_ADMIN = os.environ.get(
    "JOBSTACK_BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BENCH_DATABASE = "jobstack_bench"


class QueueWatch:
    """Reads a queue's depth over one connection (a connection per reading would load
    RabbitMQ and this machine's two cores while they are being measured)."""

    def __init__(self, queue: str) -> None:
        self._queue = queue
        self._connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        self._channel = self._connection.channel()

    def ready(self) -> int:
        """Messages ready (not delivered to a consumer)."""
        method = self._channel.queue_declare(self._queue, passive=True).method
        count: int = method.message_count
        return count

    def close(self) -> None:
        self._connection.close()


def ready_messages(queue: str) -> int:
    """Messages ready (not delivered to a consumer) in ``queue``."""
    watch = QueueWatch(queue)
    try:
        return watch.ready()
    finally:
        watch.close()


def fresh_database(backend: str, work: Path) -> str:
    """An empty database for one run, as a SQLAlchemy URL (not yet migrated)."""
    if backend == "sqlite":
        path = work / "bench.db"
        for leftover in (path, path.with_suffix(".db-wal"), path.with_suffix(".db-shm")):
            leftover.unlink(missing_ok=True)
        return f"sqlite:///{path}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{BENCH_DATABASE}"


def postgres_commits() -> int:
    """Transactions committed in the bench database so far (every client, every kind).

    PostgreSQL publishes its statistics with a delay of up to a second; readings are
    taken after waiting that out.
    """
    time.sleep(1.2)
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [BENCH_DATABASE]
        ).fetchone()
    assert row is not None
    return int(row[0])


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_worker(
    module: str, processes: int, threads: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    dramatiq = Path(sys.executable).with_name("dramatiq")
    command = [str(dramatiq), module, "-p", str(processes), "-t", str(threads)]
    return start(command, env, log)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def peak_rss_mib(parent: subprocess.Popen[bytes]) -> float:
    """The largest peak resident set (VmHWM) among ``parent``'s child processes, in MiB:
    Dramatiq's worker processes are children of the ``dramatiq`` command."""
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    peaks = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    if not peaks:
        raise RuntimeError("the worker has no child process to measure")
    return max(peaks)


def worker_cpu_seconds(parent: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) used so far by ``parent``'s worker processes (its
    children), from /proc: the cost of the work, whatever else the machine is doing."""
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    ticks = 0
    for pid in children:
        # Fields 14 and 15 of /proc/<pid>/stat, after the parenthesised command name.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for_consumers(queue: str, timeout: float = 60) -> None:
    """Wait until a worker consumes ``queue`` (it has booted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        try:
            method = connection.channel().queue_declare(queue, passive=True).method
        finally:
            connection.close()
        if method.consumer_count > 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no worker consumed {queue} within {timeout}s")


RESULTS = ROOT / "bench" / "results"


def write_results(kind: str, arguments: dict[str, Any], sections: dict[str, Any]) -> Path:
    """``bench/results/<kind>-<UTC time>.json``: when, on what machine, with which
    arguments, and ``sections``; prints and returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"{kind}-{stamp}.json"
    document = {
        "when": stamp,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "arguments": arguments,
        **sections,
    }
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return out
