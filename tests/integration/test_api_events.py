"""Server-Sent Events following a real job on a real worker."""

from __future__ import annotations

import json
from typing import Any

import dramatiq
from flask.testing import FlaskClient

from tests.integration.conftest import Tokens


def _parse(stream: str) -> list[dict[str, Any]]:
    frames = []
    for block in stream.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        frames.append(
            {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
        )
    return frames


def test_the_event_stream_follows_a_job_to_succeeded_and_ends(
    client: FlaskClient, tokens: Tokens, worker: dramatiq.Worker
) -> None:
    body = {"actor": "diagnostics.sleep", "kwargs": {"seconds": 1.5}}
    job_id = client.post("/v1/jobs", json=body, headers=tokens.acme).get_json()["id"]

    response = client.get(f"/v1/jobs/{job_id}/events", headers=tokens.acme)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    frames = _parse(response.get_data(as_text=True))  # Returns once the stream has ended.

    assert [f["id"] for f in frames] == list(range(1, len(frames) + 1))
    states = [f["data"]["to_state"] for f in frames if f["data"]["to_state"]]
    assert states == ["queued", "running", "succeeded"]
    progress = [f["data"]["data"]["percent"] for f in frames if f["event"] == "progress"]
    assert progress and progress[0] == 0
    assert frames[-1]["data"]["to_state"] == "succeeded"

    resumed = client.get(
        f"/v1/jobs/{job_id}/events", headers={**tokens.acme, "Last-Event-ID": str(frames[-2]["id"])}
    )
    assert [f["id"] for f in _parse(resumed.get_data(as_text=True))] == [frames[-1]["id"]]


def test_a_bad_last_event_id_is_refused(client: FlaskClient, tokens: Tokens) -> None:
    job_id = client.post(
        "/v1/jobs", json={"actor": "diagnostics.noop", "kwargs": {}}, headers=tokens.acme
    ).get_json()["id"]
    response = client.get(
        f"/v1/jobs/{job_id}/events", headers={**tokens.acme, "Last-Event-ID": "x"}
    )
    assert response.status_code == 400
