"""Drain rate: N no-op messages, bare Dramatiq against jobstack, same RabbitMQ, same -p/-t.

Each run fills the queue first, then starts ``dramatiq`` and times from the first message
taken to the queue holding no ready message (worker start-up excluded). A worker may still
hold up to threads × 2 prefetched messages then; for jobstack the time until every job is
recorded ``succeeded`` is reported too.

    python -m bench.drain [-n 3000] [-p 1] [-t 8]      (make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import psycopg
from dramatiq.brokers.rabbitmq import RabbitmqBroker

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BROKER_URL = os.environ.get("JOBSTACK_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
POSTGRES_ADMIN = os.environ.get(
    "JOBSTACK_BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _ready(queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        count: int = connection.channel().queue_declare(queue, passive=True).method.message_count
        return count
    finally:
        connection.close()


def _start_worker(
    module: str, processes: int, threads: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    dramatiq = Path(sys.executable).with_name("dramatiq")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(dramatiq), module, "-p", str(processes), "-t", str(threads)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _time_drain(
    queue: str, total: int, worker: subprocess.Popen[bytes], timeout: float = 600
) -> float:
    deadline = time.monotonic() + timeout
    started = None
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        ready = _ready(queue)
        now = time.monotonic()
        if started is None and ready < total:
            started = now
        if started is not None and ready == 0:
            return now - started
        time.sleep(0.02)
    raise TimeoutError(f"{queue} did not drain in {timeout}s")


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)


def bare(total: int, processes: int, threads: int, log_dir: Path) -> dict[str, Any]:
    from bench import bare_actors

    bare_actors.broker.declare_queue(bare_actors.QUEUE, ensure=True)
    bare_actors.broker.flush(bare_actors.QUEUE)
    for _ in range(total):
        bare_actors.noop.send()
    worker = _start_worker(
        "bench.bare_actors", processes, threads, dict(os.environ), log_dir / "bare.log"
    )
    try:
        seconds = _time_drain(bare_actors.QUEUE, total, worker)
    finally:
        _stop(worker)
    return {"system": "bare dramatiq", "seconds": seconds, "per_second": total / seconds}


def _database(backend: str, work: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{work / 'bench.db'}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS jobstack_bench WITH (FORCE)")
        connection.execute("CREATE DATABASE jobstack_bench")
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/jobstack_bench"


def jobstack(backend: str, total: int, processes: int, threads: int, work: Path) -> dict[str, Any]:
    url = _database(backend, work)
    env = {**os.environ, "JOBSTACK_DATABASE_URL": url, "JOBSTACK_LOG_FORMAT": "text"}
    os.environ.update(env)
    from app import db, migrate

    migrate.upgrade(url)
    db.configure(url)
    import actors  # noqa: F401
    from actors import diagnostics
    from app.broker import broker
    from app.jobs import submit

    assert isinstance(broker, RabbitmqBroker)
    broker.declare_queue("default", ensure=True)
    broker.flush_all()
    ids = [submit(diagnostics.noop).id for _ in range(total)]
    worker = _start_worker("actors", processes, threads, env, work / f"jobstack-{backend}.log")
    try:
        started = time.monotonic()
        seconds = _time_drain("default", total, worker)
        recorded = _all_succeeded(ids, started)
    finally:
        _stop(worker)
        db.get_engine().dispose()
    return {
        "system": f"jobstack ({backend})",
        "seconds": seconds,
        "per_second": total / seconds,
        "recorded_seconds": recorded,
    }


def _all_succeeded(ids: list[str], started: float) -> float:
    from sqlalchemy import func, select

    from app import db
    from app.models import Job

    while True:
        with db.session_scope() as session:
            done = session.scalar(
                select(func.count()).select_from(Job).where(Job.state == "succeeded")
            )
        if done == len(ids):
            return time.monotonic() - started
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="messages per run")
    parser.add_argument("-p", type=int, default=1, help="worker processes")
    parser.add_argument("-t", type=int, default=8, help="worker threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jobstack-bench-") as scratch:
        work = Path(scratch)
        rows = [bare(args.n, args.p, args.t, work)]
        for backend in ("postgres", "sqlite"):
            rows.append(jobstack(backend, args.n, args.p, args.t, work))
    baseline = rows[0]["per_second"]
    print(
        f"\ndrain of {args.n} no-op messages, dramatiq -p {args.p} -t {args.t}, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'system':<22} {'seconds':>8} {'msg/s':>9} {'vs bare':>8}  recorded (s)")
    for row in rows:
        row["ratio_vs_bare"] = row["per_second"] / baseline
        recorded = row.get("recorded_seconds")
        print(
            f"{row['system']:<22} {row['seconds']:>8.2f} {row['per_second']:>9.0f} "
            f"{row['ratio_vs_bare']:>7.2f}x  {'' if recorded is None else f'{recorded:.2f}'}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"drain-{stamp}.json"
    out.write_text(
        json.dumps({"n": args.n, "processes": args.p, "threads": args.t, "results": rows}, indent=2)
    )
    print(f"\nwritten: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
