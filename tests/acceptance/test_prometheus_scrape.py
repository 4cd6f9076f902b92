"""A real Prometheus scrapes the served API and a real dramatiq worker: what it stores is
what the jobs did. And /metrics stays closed without the token, and absent when off."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import BIN, WorkerProcess, jobstack
from tests.support.ports import free_port
from tests.support.prometheus import RunningPrometheus
from tests.support.served_api import ServedApi
from tests.support.services import reachable
from tests.support.waiting import wait_until

METRICS_TOKEN = "metrics-s3cret"

#: The jobs submitted, and what each does: (actor, kwargs, its attempts' outcomes).
JOBS: list[tuple[str, dict[str, Any], list[str]]] = [
    *[("diagnostics.noop", {}, ["succeeded"])] * 5,
    *[("diagnostics.fail", {"times": 1}, ["retried", "succeeded"])] * 2,
    ("diagnostics.fail", {"times": 1, "permanent": True}, ["failed"]),
]


def _status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def _api_token() -> dict[str, str]:
    created = jobstack("tokens", "create", "--tenant", "acme", "--scopes", "jobs:read,jobs:write")
    assert created.returncode == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip()}"}


@pytest.fixture
def metered_api(clean_db: str, tmp_path: Path) -> Iterator[ServedApi]:
    served = ServedApi(
        BIN,
        tmp_path / "api.log",
        {"JOBSTACK_METRICS_ENABLED": "true", "JOBSTACK_METRICS_TOKEN": METRICS_TOKEN},
    )
    yield served
    served.stop()


def test_prometheus_stores_what_the_jobs_did(
    metered_api: ServedApi, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    worker_port = free_port()
    start_worker(
        {
            "JOBSTACK_METRICS_ENABLED": "true",
            "JOBSTACK_METRICS_PORT": str(worker_port),
            "JOBSTACK_METRICS_DIR": str(tmp_path / "metrics"),
            "JOBSTACK_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    prometheus = RunningPrometheus(
        tmp_path / "prometheus",
        {"api": f"127.0.0.1:{metered_api.port}", "workers": f"127.0.0.1:{worker_port}"},
        token=METRICS_TOKEN,
    )
    try:
        auth = _api_token()
        ids = []
        for actor, kwargs, _outcomes in JOBS:
            status, _, job = metered_api.call(
                "POST", "/v1/jobs", {"actor": actor, "kwargs": kwargs}, auth
            )
            assert status == 202, job
            ids.append(job["id"])

        def finished() -> bool:
            states = [metered_api.call("GET", f"/v1/jobs/{i}", headers=auth)[2] for i in ids]
            return all(s["state"] in {"succeeded", "failed"} for s in states)

        wait_until(finished, 60, "the jobs to finish")

        outcomes: dict[str, float] = {}
        for _actor, _kwargs, planned in JOBS:
            for outcome in planned:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        attempts = sum(outcomes.values())
        diagnostics = 'actor=~"diagnostics[.].*"'

        def scraped() -> bool:
            by_outcome = prometheus.by(
                "outcome", f"sum by (outcome) (jobstack_job_attempts_total{{{diagnostics}}})"
            )
            return {o: by_outcome.get(o) for o in outcomes} == outcomes and prometheus.by(
                "state", 'jobstack_jobs{queue="default"}'
            ).get("succeeded") == outcomes["succeeded"]

        wait_until(scraped, 30, "Prometheus to scrape the jobs' outcomes")

        def one(expression: str) -> float:
            (value,) = prometheus.query(expression).values()
            return value

        assert prometheus.by("job", "up") == {"api": 1, "workers": 1}
        assert one(f"sum(jobstack_job_duration_seconds_count{{{diagnostics}}})") == attempts
        assert one(f"sum(jobstack_job_queue_wait_seconds_count{{{diagnostics}}})") == attempts
        assert one(f"sum(jobstack_jobs_in_progress{{{diagnostics}}})") == 0
        # The retried jobs waited their backoff (0.2 s to 2 s) in the delay queue, not
        # in the queue: the waits are short.
        assert one(f"max(jobstack_job_queue_wait_seconds_sum{{{diagnostics}}})") < 5
        states = prometheus.by("state", 'jobstack_jobs{queue="default"}')
        assert (states["succeeded"], states["failed"], states["queued"]) == (7, 1, 0)
        assert one('jobstack_queue_messages{queue="default",kind="dead"}') >= 1
        assert one('jobstack_queue_messages{queue="default",kind="ready"}') == 0
        assert one("jobstack_workers_alive") >= 1
        assert one("jobstack_outbox_pending") == 0
        messages = prometheus.by("kind", 'jobstack_queue_messages{queue="default"}')
        if reachable("http://127.0.0.1:15672", 15672):
            # RabbitMQ's management API answers (make run enables it): unacked is read.
            assert messages["unacked"] == 0
        else:
            assert "unacked" not in messages  # Absent rather than a made-up 0.
        # What Prometheus stored, for the record (pytest -s shows it).
        print(
            "attempts by outcome:",
            prometheus.by("outcome", "sum by (outcome) (jobstack_job_attempts_total)"),
        )
        print("jobs by state (default):", states)
        print("queue messages (default):", messages)
        print("workers alive:", one("jobstack_workers_alive"))

        # Without the token neither /metrics answers.
        assert _status(f"{metered_api.base}/metrics") == 401
        assert _status(f"http://127.0.0.1:{worker_port}/metrics") == 401
        assert _status(f"http://127.0.0.1:{worker_port}/metrics", METRICS_TOKEN) == 200
    finally:
        prometheus.stop()


def test_without_metrics_there_is_no_route_and_no_port(
    clean_db: str, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    api = ServedApi(BIN, tmp_path / "api.log", {"JOBSTACK_METRICS_ENABLED": "false"})
    try:
        status, _, body = api.call("GET", "/metrics")
        assert status == 404 and body["code"] == 404
    finally:
        api.stop()

    worker_port = free_port()
    worker = start_worker(
        {"JOBSTACK_METRICS_ENABLED": "false", "JOBSTACK_METRICS_PORT": str(worker_port)}
    )
    wait_until(lambda: "Worker process is ready" in worker.log.read_text(), 30, "the worker")
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", worker_port), 2),
    ):
        pass
