"""Server-Sent Events following a real job on a real worker."""

from __future__ import annotations

import http.client
import json
from typing import Any

import dramatiq
import pytest
from flask.testing import FlaskClient

from tests.integration.conftest import Tokens


def _stream(port: int, job_id: str, headers: dict[str, str]) -> tuple[int, str, str]:
    """Status, content type and whole body of a job's event stream (it ends with the job)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/v1/jobs/{job_id}/events", headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def _parse(stream: str) -> list[dict[str, Any]]:
    frames = []
    for block in stream.strip().split("\n\n"):
        if block.startswith("retry:"):
            continue
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        frames.append(
            {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
        )
    return frames


def test_the_event_stream_follows_a_job_to_succeeded_and_ends(
    client: FlaskClient, served_port: int, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    body = {"actor": "diagnostics.sleep", "kwargs": {"seconds": 1.5}}
    job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]

    status, content_type, stream = _stream(served_port, job_id, tokens.acme)
    assert status == 200
    assert content_type.startswith("text/event-stream")
    frames = _parse(stream)

    assert [f["id"] for f in frames] == list(range(1, len(frames) + 1))
    states = [f["data"]["to_state"] for f in frames if f["data"]["to_state"]]
    assert states == ["queued", "running", "succeeded"]
    progress = [f["data"]["data"]["percent"] for f in frames if f["event"] == "progress"]
    assert progress and progress[0] == 0
    assert frames[-1]["data"]["to_state"] == "succeeded"
    started = next(f for f in frames if f["data"]["to_state"] == "running")
    assert "worker_id" not in started["data"]["data"]  # A platform detail: admins only.
    as_admin = _parse(_stream(served_port, job_id, tokens.admin)[2])
    started = next(f for f in as_admin if f["data"]["to_state"] == "running")
    assert ":" in started["data"]["data"]["worker_id"]  # hostname:pid

    resume = {**tokens.acme, "Last-Event-ID": str(frames[-2]["id"])}
    resumed = _stream(served_port, job_id, resume)[2]
    assert [f["id"] for f in _parse(resumed)] == [frames[-1]["id"]]


@pytest.mark.parametrize("last", ["x", "²", "١٢", "1" * 30, "-1"])
def test_a_bad_last_event_id_is_refused(client: FlaskClient, tokens: Tokens, last: str) -> None:
    job_id = client.post(
        "/v1/jobs", json={"actor": "diagnostics.noop", "kwargs": {}}, headers=tokens.acme
    ).get_json()["id"]
    response = client.get(
        f"/v1/jobs/{job_id}/events", headers={**tokens.acme, "Last-Event-ID": last}
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in response.get_json()["message"]


def test_another_tenants_job_has_no_stream(
    client: FlaskClient, served_port: int, tokens: Tokens
) -> None:
    job_id = client.post(
        "/v1/jobs", json={"actor": "diagnostics.noop", "kwargs": {}}, headers=tokens.acme
    ).get_json()["id"]
    assert _stream(served_port, job_id, tokens.globex)[0] == 404
    assert _stream(served_port, job_id, {})[0] == 401
