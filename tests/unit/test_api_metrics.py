"""The API's /metrics: what the job database and the broker say, zero-filled, cached, and
served only when switched on (behind the token when one is set)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from flask.testing import FlaskClient
from prometheus_client import CONTENT_TYPE_LATEST

from api import create_app
from app import db
from app.defaults import CRON_KEY_PREFIX
from app.models import Job, Worker
from app.observability.api_collector import CachedCollector, job_families
from app.observability.job_counts import read_job_counts
from app.observability.names import API_METRICS
from app.observability.queue_counts import management_api, queue_messages, unacked_messages
from app.states import JobState
from app.timeutil import utcnow
from tests.support.factories import make_job

NOW = utcnow()


def _set(job_id: str, **values: Any) -> None:
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        for name, value in values.items():
            setattr(job, name, value)


def _worker(worker_id: str, last_seen_ago: float, stopped: bool = False) -> None:
    with db.session_scope() as session:
        session.add(
            Worker(
                id=worker_id,
                hostname="h",
                pid=1,
                queues=["default"],
                started_at=NOW - timedelta(hours=1),
                last_seen=NOW - timedelta(seconds=last_seen_ago),
                running_job_ids=[],
                processed=0,
                failed=0,
                stopped_at=NOW if stopped else None,
            )
        )


def test_the_database_numbers_come_from_one_read_of_each_table(clean_db: str) -> None:
    # Queued for 2 minutes and 10 s (published), and due 30 s ago, not yet published.
    waiting = make_job(JobState.QUEUED)
    _set(waiting, updated_at=NOW - timedelta(minutes=2), published_at=NOW)
    _set(make_job(JobState.QUEUED), updated_at=NOW - timedelta(seconds=10), published_at=NOW)
    _set(make_job(JobState.SCHEDULED), run_at=NOW - timedelta(seconds=30))
    _set(make_job(JobState.SCHEDULED), run_at=NOW + timedelta(hours=1))  # not due
    _set(make_job(JobState.RETRYING), run_at=NOW - timedelta(seconds=5), published_at=NOW)
    for _ in range(3):
        make_job(JobState.SUCCEEDED)
    tick = make_job(JobState.SUCCEEDED, actor="m.tick")
    _set(tick, idempotency_key=f"{CRON_KEY_PREFIX}m.tick:x", finished_at=NOW)
    _set(make_job(JobState.FAILED, actor="m.tick"), idempotency_key=f"{CRON_KEY_PREFIX}m.tick:y")
    _worker("alive", 1)
    _worker("gone", 600)
    _worker("stopped", 1, stopped=True)

    with db.session_scope() as session:
        counts = read_job_counts(session, now=NOW, gone_after=60, schedules=["m.tick", "m.none"])

    assert counts.jobs == {
        ("default", "queued"): 2,
        ("default", "scheduled"): 2,
        ("default", "retrying"): 1,
        ("default", "succeeded"): 4,
        ("default", "failed"): 1,
    }
    assert counts.oldest_queued == {"default": NOW - timedelta(minutes=2)}
    assert (counts.outbox_pending, counts.outbox_oldest) == (1, NOW - timedelta(seconds=30))
    assert counts.workers_alive == 1
    assert counts.cron_last_success == {"m.tick": NOW}


def test_every_queue_and_state_has_a_series(clean_db: str) -> None:
    make_job(JobState.QUEUED)
    now = utcnow()
    with db.session_scope() as session:
        counts = read_job_counts(session, now=now, gone_after=60, schedules=[])
    families = {f.name: f for f in job_families(counts, ["critical", "default"], now.timestamp())}

    assert set(families) == set(API_METRICS) - {"jobstack_queue_messages"}
    jobs = {
        (s.labels["queue"], s.labels["state"]): s.value for s in families["jobstack_jobs"].samples
    }
    assert len(jobs) == 2 * len(JobState)
    assert jobs[("default", "queued")] == 1 and jobs[("critical", "queued")] == 0
    ages = {
        s.labels["queue"]: s.value
        for s in families["jobstack_queue_oldest_job_age_seconds"].samples
    }
    assert ages["critical"] == 0 and 0 < ages["default"] < 5
    # Queued and not yet published (nothing publishes here): the outbox's.
    assert [s.value for s in families["jobstack_outbox_pending"].samples] == [1]
    assert [s.value for s in families["jobstack_outbox_lag_seconds"].samples] == [ages["default"]]


def test_the_numbers_are_read_once_per_cache_period() -> None:
    reads: list[int] = []

    def read() -> list[Any]:
        reads.append(1)
        return []

    cached = CachedCollector(read, ttl=60)
    threads = [threading.Thread(target=lambda: list(cached.collect())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reads) == 1
    assert len(list(CachedCollector(read, ttl=0).collect())) == 0 and len(reads) == 2


def test_the_stub_brokers_queues_are_counted_without_unacked() -> None:
    broker = StubBroker()
    broker.declare_queue("default")
    for delay in (None, None, 10_000):
        broker.enqueue(Message("default", "m.echo", (), {}, {}), delay=delay)

    counts = queue_messages(broker, "stub://")
    assert counts == {("default", "ready"): 2, ("default", "delayed"): 1, ("default", "dead"): 0}
    broker.close()


def test_the_management_api_is_found_from_the_broker_url() -> None:
    url, authorization = management_api("amqp://jobs:p%40ss@rabbit:5672/%2Fprod?heartbeat=60")
    assert url == ("http://rabbit:15672/api/queues/%2Fprod?columns=name,messages_unacknowledged")
    assert authorization == "Basic am9iczpwQHNz"  # jobs:p@ss
    url, _ = management_api("amqps://h/")
    assert url.startswith("https://h:15671/api/queues/%2F?")


class _Management(BaseHTTPRequestHandler):
    """RabbitMQ's GET /api/queues/{vhost}, as the management plugin answers it."""

    def do_GET(self) -> None:
        if self.headers["Authorization"] != "Basic Z3Vlc3Q6Z3Vlc3Q=":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            [
                {"name": "default", "messages_unacknowledged": 3},
                {"name": "default.DQ", "messages_unacknowledged": 2},
                {"name": "low"},
            ]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def management() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Management)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/queues/%2F"
    server.shutdown()
    server.server_close()
    thread.join()


def test_unacked_messages_come_from_the_management_api_or_not_at_all(management: str) -> None:
    assert unacked_messages(management, "Basic Z3Vlc3Q6Z3Vlc3Q=") == {"default": 3, "default.DQ": 2}
    # Refused, or nothing listening: no numbers rather than zeros.
    assert unacked_messages(management, "Basic bm86bm8=") is None
    assert unacked_messages("http://127.0.0.1:9/api/queues/%2F", "Basic x") is None


@pytest.fixture
def stub_broker_for_the_api() -> Iterator[StubBroker]:
    """The broker the API's /metrics reads, instead of RabbitMQ (the API's actors stay
    declared on the process's broker)."""
    import actors  # noqa: F401

    previous = dramatiq.get_broker()
    broker = StubBroker()
    broker.declare_queue("default")
    dramatiq.set_broker(broker)
    yield broker
    dramatiq.set_broker(previous)
    broker.close()


def _client(monkeypatch: pytest.MonkeyPatch, **env: str) -> FlaskClient:
    for name, value in env.items():
        monkeypatch.setenv(f"JOBSTACK_{name}", value)
    return create_app({"TESTING": True}).test_client()


def test_metrics_are_served_in_the_prometheus_text_format_when_on(
    clean_db: str, stub_broker_for_the_api: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_job(JobState.QUEUED)
    client = _client(monkeypatch, METRICS_ENABLED="true")
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type == CONTENT_TYPE_LATEST
    text = response.get_data(as_text=True)
    assert 'jobstack_jobs{queue="default",state="queued"} 1.0' in text
    assert 'jobstack_queue_messages{kind="ready",queue="default"} 0.0' in text
    for name in API_METRICS:
        if name != "jobstack_cron_last_success_timestamp_seconds":  # no tick has run
            assert f"\n{name}" in text, name
    # It needs no API token, and is not in the API's OpenAPI document.
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


def test_metrics_want_the_metrics_token_when_one_is_set(
    clean_db: str, stub_broker_for_the_api: StubBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(monkeypatch, METRICS_ENABLED="true", METRICS_TOKEN="s3cret")
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["code"] == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_metrics_are_the_usual_404_when_off(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBSTACK_METRICS_ENABLED", raising=False)
    response = create_app({"TESTING": True}).test_client().get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["code"] == 404
