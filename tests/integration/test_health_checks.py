"""The periodic health check, run as a job on a real worker against a real HTTP API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import dramatiq
import pytest
from flask.testing import FlaskClient

from api import create_app
from app.jobs import submit
from tests.integration.conftest import Tokens
from tests.support.waiting import wait_for_state


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api_url(client: FlaskClient) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_health_checks_are_recorded_and_listed(
    client: FlaskClient,
    tokens: Tokens,
    worker: dramatiq.Worker,
    api_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSTACK_API_URL", api_url)
    healthy = wait_for_state(submit("maintenance.health_check").id)
    assert healthy.result == {"ok": True, "api": True, "database": True, "broker": True}

    monkeypatch.setenv("JOBSTACK_API_URL", "http://127.0.0.1:1")
    down = wait_for_state(submit("maintenance.health_check").id)
    assert down.result == {"ok": False, "api": False, "database": True, "broker": True}

    history = client.get("/v1/health/history", headers=tokens.admin).get_json()
    assert [check["ok"] for check in history] == [False, True]  # newest first
    assert (
        "ConnectionRefusedError" in history[0]["api_detail"]
        or "refused" in history[0]["api_detail"]
    )
