"""Submission through the REST API (gunicorn, as ``jobstack api`` runs it) and the time
from submission to start.

- single: concurrent clients each POST /v1/jobs one job at a time (keep-alive);
- batch: POST /v1/jobs/batch of ``BATCH_SIZE`` jobs;
- latency: one client POSTs at a steady rate while a worker runs; submit-to-start is
  the job's ``started_at`` minus its ``created_at`` (both stamped on this machine).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.services import (
    fresh_database,
    postgres_commits,
    ready_messages,
    start,
    start_worker,
    stop,
    wait_for_consumers,
)

PORT = int(os.environ.get("JOBSTACK_BENCH_PORT", "18765"))
BATCH_SIZE = 1000
NOOP = {"actor": "diagnostics.noop", "kwargs": {}}


class Client:
    """One keep-alive HTTP connection to the API."""

    def __init__(self, token: str) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: Any) -> Any:
        self._connection.request("POST", path, json.dumps(body), self._headers)
        response = self._connection.getresponse()
        payload = response.read()
        if response.status != 202:
            raise RuntimeError(f"POST {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload)

    def close(self) -> None:
        self._connection.close()


class Api:
    """The API on a fresh PostgreSQL database, with a token that may submit."""

    def __init__(self, work: Path, workers: int = 2, threads: int = 16) -> None:
        self.workers = workers
        self.threads = threads
        self.url = fresh_database("postgres", work)
        self.env = {
            **os.environ,
            "JOBSTACK_DATABASE_URL": self.url,
            "JOBSTACK_LOG_FORMAT": "text",
        }
        self._work = work
        self._server: Any = None
        self.token = ""

    def __enter__(self) -> Api:
        os.environ.update(self.env)
        from app import db
        from app.migrations import migrate
        from app.tokens import create_token

        migrate.upgrade(self.url)
        db.configure(self.url)
        self.token = create_token("bench", {"jobs:read", "jobs:write"}, "benchmark")
        command = [sys.executable, "-m", "app.cli", "api", "--bind", f"127.0.0.1:{PORT}"]
        command += ["--workers", str(self.workers), "--threads", str(self.threads)]
        self._server = start(command, self.env, self._work / "api.log")
        try:
            self._wait_until_serving()
        except BaseException:
            stop(self._server)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self._server)
        from app import db

        db.get_engine().dispose()

    def _wait_until_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the API did not answer on port {PORT} within {timeout}s")


def _purge_default_queue() -> None:
    from app.broker import broker

    broker.flush_all()


def _run_clients(clients: int, work: Callable[[Client], None], token: str) -> float:
    """Run ``work`` on ``clients`` connections at once; seconds until all are done.
    Raises the first client's error."""
    errors: list[BaseException] = []

    def run() -> None:
        client = Client(token)
        try:
            work(client)
        except BaseException as error:
            errors.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    return time.monotonic() - started


def _submission(system: str, done: int, seconds: float, commits_before: int) -> dict[str, Any]:
    _check_published(done)
    return {
        "system": system,
        "jobs": done,
        "seconds": seconds,
        "per_second": done / seconds,
        "commits_per_job": (postgres_commits() - commits_before) / done,
    }


def single_posts(api: Api, total: int, clients: int) -> dict[str, Any]:
    """``total`` jobs, one per POST, from ``clients`` concurrent connections."""
    _purge_default_queue()
    per_client = total // clients

    def post_one_by_one(client: Client) -> None:
        for _ in range(per_client):
            client.post("/v1/jobs", NOOP)

    commits_before = postgres_commits()
    seconds = _run_clients(clients, post_one_by_one, api.token)
    system = f"single POST /v1/jobs, {clients} clients"
    return _submission(system, per_client * clients, seconds, commits_before)


def batch_posts(api: Api, total: int, clients: int) -> dict[str, Any]:
    """``total`` jobs in POST /v1/jobs/batch requests of BATCH_SIZE, ``clients`` at once."""
    _purge_default_queue()
    requests = max(1, total // BATCH_SIZE)
    body = {"jobs": [NOOP] * BATCH_SIZE}
    lock = threading.Lock()
    remaining = [requests]

    def post_batches(client: Client) -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            client.post("/v1/jobs/batch", body)

    commits_before = postgres_commits()
    seconds = _run_clients(clients, post_batches, api.token)
    system = f"POST /v1/jobs/batch ({BATCH_SIZE} jobs), {clients} clients"
    return _submission(system, requests * BATCH_SIZE, seconds, commits_before)


def _check_published(expected: int, timeout: float = 30) -> None:
    """Every accepted job must be in the queue: a fast API that loses messages is no
    result."""
    deadline = time.monotonic() + timeout
    while ready_messages("default") < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {ready_messages('default')} of {expected} accepted jobs reached RabbitMQ"
            )
        time.sleep(0.1)


def latency(api: Api, rate: float, seconds: float, processes: int, threads: int) -> dict[str, Any]:
    """Submit-to-start latency at a steady ``rate`` of single POSTs, with a worker running."""
    _purge_default_queue()
    worker = start_worker("actors", processes, threads, api.env, api._work / "latency-worker.log")
    ids: list[str] = []
    try:
        wait_for_consumers("default")
        client = Client(api.token)
        total = int(rate * seconds)
        started = time.monotonic()
        for n in range(total):
            # Open loop: each request goes at its slot, however long the last one took.
            pause = started + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ids.append(client.post("/v1/jobs", NOOP)["id"])
        client.close()
        delays = _start_delays(ids)
    finally:
        stop(worker)
    delays.sort()
    return {
        "system": f"submit-to-start at {rate:.0f} jobs/s",
        "jobs": len(delays),
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))],
        "max_ms": delays[-1],
    }


def _start_delays(ids: list[str], timeout: float = 60) -> list[float]:
    from sqlalchemy import select

    from app import db
    from app.models import Job

    deadline = time.monotonic() + timeout
    while True:
        with db.session_scope() as session:
            rows = session.execute(
                select(Job.created_at, Job.started_at).where(
                    Job.id.in_(ids), Job.started_at.is_not(None)
                )
            ).all()
        if len(rows) == len(ids):
            return [
                (started - created).total_seconds() * 1000
                for created, started in rows
                if started is not None
            ]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(rows)} of {len(ids)} jobs started")
        time.sleep(0.2)
