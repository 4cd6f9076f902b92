"""Webhooks to a real HTTP server: signed, retried, and never to forbidden ranges."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app import db
from app.models import Job
from app.webhooks import secret_for, sign
from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state, wait_until


@dataclass
class Receiver:
    url: str
    failures_left: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.failures_left > 0:
                state.failures_left -= 1
                self.send_response(500)
            else:
                state.received.append((dict(self.headers), body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "127.0.0.1/32")
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def redirector(receiver: Receiver) -> Iterator[str]:
    """The URL of a server that answers every POST with a redirect to the receiver."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", receiver.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/moved"
    server.shutdown()
    server.server_close()


def _deliveries(job_id: str) -> list[Job]:
    with db.session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.actor == "webhooks.deliver"))
        return [job for job in jobs if job.args == [job_id]]


def test_a_finished_job_posts_its_signed_json_to_its_callback(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker, receiver: Receiver
) -> None:
    body = {"actor": "diagnostics.echo", "kwargs": {"value": 5}, "callback_url": receiver.url}
    job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]

    wait_until(lambda: receiver.received, 20, "the webhook")
    [(headers, payload)] = receiver.received
    with db.session_scope() as session:
        secret = secret_for(session, "acme")
    assert headers["X-Jobstack-Signature"] == sign(secret, payload)
    assert headers["X-Jobstack-Event"] == "job.succeeded"
    sent = json.loads(payload)
    assert (sent["id"], sent["state"], sent["result"]) == (job_id, "succeeded", 5)
    # The tenant's endpoint gets the tenant's view: no worker host, no bookkeeping.
    assert not {"worker_id", "error_traceback", "request_fingerprint", "unique_key"} & set(sent)
    [delivery] = _deliveries(job_id)
    assert wait_for_state(delivery.id).tenant == "acme"


def test_a_failing_destination_is_retried_with_backoff(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker, receiver: Receiver
) -> None:
    receiver.failures_left = 1
    deliver = dramatiq.get_broker().get_actor("webhooks.deliver")
    original = dict(deliver.options)
    deliver.options.update(min_backoff=100, max_backoff=200)
    try:
        body = {"actor": "diagnostics.noop", "kwargs": {}, "callback_url": receiver.url}
        job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]
        wait_until(lambda: receiver.received, 20, "the webhook after a retry")
    finally:
        deliver.options.clear()
        deliver.options.update(original)
    [delivery] = _deliveries(job_id)
    done = wait_for_state(delivery.id)
    assert (done.state, done.attempts) == ("succeeded", 2)


def test_a_redirect_fails_the_delivery_at_once_without_being_followed(
    client: FlaskClient,
    tokens: Tokens,
    worker: dramatiq.Worker,
    receiver: Receiver,
    redirector: str,
) -> None:
    body = {"actor": "diagnostics.noop", "kwargs": {}, "callback_url": redirector}
    job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]

    [delivery] = wait_until(lambda: _deliveries(job_id), 20, "the delivery job")
    done = wait_for_state(delivery.id)
    assert (done.state, done.attempts) == ("failed", 1)
    assert done.error_message is not None
    assert f"answered 302 to {receiver.url!r}" in done.error_message
    assert "redirects are not followed" in done.error_message
    assert receiver.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest",
        "http://100.100.100.200/latest",
        "http://[::ffff:127.0.0.1]/x",
        "http://2130706433/x",
        "http://user:password@example.com/x",
        "ftp://example.com/x",
    ],
)
def test_callbacks_to_private_or_odd_destinations_are_refused(
    client: FlaskClient, tokens: Tokens, url: str
) -> None:
    body = {"actor": "diagnostics.noop", "kwargs": {}, "callback_url": url}
    response = client.post("/v1/jobs", json=body, headers=tokens.acme)
    assert response.status_code == 422
    assert "callback_url" in response.get_json()["errors"]["json"]
