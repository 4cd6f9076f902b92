"""Crafted input is a 4xx naming what is wrong, never a 500; listings stay small."""

from __future__ import annotations

import base64
import json
from typing import Any

import pika
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import xq_name
from flask.testing import FlaskClient
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import update

from api.limits import LISTED_VALUE_MAX_CHARS, MAX_JSON_DEPTH
from app import db
from app.models import IngestionRun, Job
from tests.integration.conftest import Tokens
from tests.support.waiting import wait_until

ECHO = {"actor": "diagnostics.echo", "kwargs": {"value": 7}}


def _opaque(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _run(tenant: str) -> str:
    with db.session_scope() as session:
        session.add(
            IngestionRun(
                id="r1",
                tenant=tenant,
                kind="app",
                file_name="a.tgz",
                sha256="0" * 64,
                size_bytes=1,
                status="complete",
            )
        )
    return "r1"


def _field_errors(response: Any, location: str) -> dict[str, Any]:
    assert response.status_code == 422, response.get_json()
    errors: dict[str, Any] = response.get_json()["errors"][location]
    return errors


@pytest.mark.parametrize(
    "row_id",
    [10**30, 2**63, 2**31],
    ids=["30 digits", "beyond 64 bits", "beyond the 32-bit id column"],
)
def test_an_id_cursor_beyond_the_id_column_is_a_422(
    client: FlaskClient, tokens: Tokens, row_id: int
) -> None:
    cursor = _opaque(f"i{row_id}")
    names = client.get(f"/v1/names?cursor={cursor}", headers=tokens.acme)
    assert _field_errors(names, "query") == {"cursor": ["not a cursor returned by this API"]}

    run_id = _run("acme")
    stanzas = client.get(f"/v1/runs/{run_id}/stanzas?cursor={cursor}", headers=tokens.acme)
    assert _field_errors(stanzas, "query") == {"cursor": ["not a cursor returned by this API"]}


def test_an_id_cursor_the_api_could_have_made_is_accepted(
    client: FlaskClient, tokens: Tokens
) -> None:
    response = client.get(f"/v1/names?cursor={_opaque(f'i{2**31 - 1}')}", headers=tokens.acme)
    assert response.status_code == 200
    assert response.get_json() == {"items": [], "next_cursor": None}


OUT_OF_RANGE_MOMENTS = [
    "9999-12-31T23:59:59-05:00",  # past datetime's range in UTC
    "9999-06-01T00:00:00+00:00",
    "0001-01-01T00:00:00+05:00",  # before datetime's range in UTC
    "1969-12-31T23:59:59+00:00",
]


@pytest.mark.parametrize("moment", OUT_OF_RANGE_MOMENTS)
def test_a_created_after_outside_1970_to_9998_is_a_422(
    client: FlaskClient, tokens: Tokens, moment: str
) -> None:
    response = client.get("/v1/jobs", query_string={"created_after": moment}, headers=tokens.acme)
    errors = _field_errors(response, "query")
    assert errors == {"created_after": ["must be from 1970 to 9998 (UTC)"]}


@pytest.mark.parametrize("moment", OUT_OF_RANGE_MOMENTS)
def test_a_jobs_cursor_outside_1970_to_9998_is_a_422(
    client: FlaskClient, tokens: Tokens, moment: str
) -> None:
    cursor = _opaque(json.dumps([moment, "00000000-0000-0000-0000-000000000000"]))
    response = client.get(f"/v1/jobs?cursor={cursor}", headers=tokens.acme)
    assert _field_errors(response, "query") == {"cursor": ["not a cursor returned by this API"]}


def test_a_jobs_cursor_with_a_nul_in_its_id_is_a_422(client: FlaskClient, tokens: Tokens) -> None:
    cursor = _opaque(json.dumps(["2024-01-01T00:00:00+00:00", "a\x00b"]))
    response = client.get(f"/v1/jobs?cursor={cursor}", headers=tokens.acme)
    assert _field_errors(response, "query") == {"cursor": ["not a cursor returned by this API"]}


@pytest.mark.parametrize("moment", OUT_OF_RANGE_MOMENTS)
def test_a_run_at_outside_1970_to_9998_is_a_422_and_stores_nothing(
    client: FlaskClient, tokens: Tokens, moment: str
) -> None:
    response = client.post("/v1/jobs", json={**ECHO, "run_at": moment}, headers=tokens.acme)
    assert _field_errors(response, "json") == {"run_at": ["must be from 1970 to 9998 (UTC)"]}
    batch = client.post(
        "/v1/jobs/batch", json={"jobs": [{**ECHO, "run_at": moment}]}, headers=tokens.acme
    )
    assert _field_errors(batch, "json") == {
        "jobs": {"0": {"run_at": ["must be from 1970 to 9998 (UTC)"]}}
    }
    assert client.get("/v1/jobs", headers=tokens.admin).get_json()["items"] == []


@pytest.mark.parametrize("field", ["failed_after", "failed_before"])
def test_dead_letter_filters_outside_1970_to_9998_are_a_422(
    client: FlaskClient, tokens: Tokens, field: str
) -> None:
    moment = OUT_OF_RANGE_MOMENTS[0]
    listed = client.get("/v1/dead-letters", query_string={field: moment}, headers=tokens.admin)
    assert _field_errors(listed, "query") == {field: ["must be from 1970 to 9998 (UTC)"]}
    redrive = client.post("/v1/dead-letters/redrive", json={field: moment}, headers=tokens.admin)
    assert _field_errors(redrive, "json") == {field: ["must be from 1970 to 9998 (UTC)"]}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [2000, MAX_JSON_DEPTH])
def test_a_json_body_nested_too_deep_is_a_400(
    client: FlaskClient, tokens: Tokens, depth: int
) -> None:
    # The kwargs object adds one level, the body object another.
    body = '{"actor": "diagnostics.echo", "kwargs": {"value": ' + _nested(depth) + "}}"
    response = client.post(
        "/v1/jobs", data=body, content_type="application/json", headers=tokens.acme
    )
    assert response.status_code == 400
    assert response.get_json()["message"] == (
        f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
    )


def test_a_json_body_at_the_depth_limit_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    value = _nested(MAX_JSON_DEPTH - 2)
    body = '{"actor": "diagnostics.echo", "kwargs": {"value": ' + value + "}}"
    response = client.post(
        "/v1/jobs", data=body, content_type="application/json", headers=tokens.acme
    )
    assert response.status_code == 202


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_in_a_json_body_are_a_400(
    client: FlaskClient, tokens: Tokens, number: str
) -> None:
    body = '{"actor": "diagnostics.echo", "kwargs": {"value": ' + number + "}}"
    response = client.post(
        "/v1/jobs", data=body, content_type="application/json", headers=tokens.acme
    )
    assert response.status_code == 400
    assert response.get_json()["message"] == (
        f"the JSON body holds {number}, which JSON does not allow"
    )


def test_a_number_too_long_to_read_in_a_json_body_is_a_400(
    client: FlaskClient, tokens: Tokens
) -> None:
    body = '{"actor": "diagnostics.echo", "kwargs": {"value": ' + "9" * 5000 + "}}"
    response = client.post(
        "/v1/jobs", data=body, content_type="application/json", headers=tokens.acme
    )
    assert response.status_code == 400
    assert response.get_json()["message"] == "the JSON body holds a number too long to read"


@pytest.mark.parametrize(
    "path", ["/v1/jobs/a%00b", "/v1/runs/a%00b", "/v1/datasets/a%00b", "/v1/worker/tasks/a%00b"]
)
def test_a_nul_character_in_a_path_parameter_is_a_400(
    client: FlaskClient, tokens: Tokens, path: str
) -> None:
    response = client.get(path, headers=tokens.admin)
    assert response.status_code == 400
    assert "contains a NUL character" in response.get_json()["message"]


def test_a_nul_character_in_the_idempotency_key_is_a_400(
    client: FlaskClient, tokens: Tokens
) -> None:
    headers = {**tokens.acme, "Idempotency-Key": "a\x00b"}
    response = client.post("/v1/jobs", json=ECHO, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["message"] == (
        "Idempotency-Key must be 1-255 printable ASCII characters"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs?limit=99999999999999999999999999999",
        "/v1/names?limit=99999999999999999999999999999",
        "/v1/names?year=-99999999999999999999999999999",
        "/v1/runs?limit=99999999999999999999999999999",
        "/v1/health/history?limit=99999999999999999999999999999",
    ],
)
def test_integer_query_parameters_out_of_range_are_a_422(
    client: FlaskClient, tokens: Tokens, path: str
) -> None:
    assert client.get(path, headers=tokens.admin).status_code == 422


def _big(size: int) -> str:
    return "x" * size


def test_a_job_listing_leaves_out_large_values_and_names_them_with_their_size(
    client: FlaskClient, tokens: Tokens
) -> None:
    large = {"actor": "diagnostics.echo", "kwargs": {"value": _big(600_000)}}
    big_id = client.post("/v1/jobs", json=large, headers=tokens.acme).get_json()["id"]
    small_id = client.post("/v1/jobs", json=ECHO, headers=tokens.acme).get_json()["id"]
    with db.session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == big_id)
            .values(
                result={"echo": _big(LISTED_VALUE_MAX_CHARS)},
                error_message=_big(LISTED_VALUE_MAX_CHARS + 1),
                progress_message=_big(LISTED_VALUE_MAX_CHARS),  # at the limit: shown
            )
        )

    response = client.get("/v1/jobs", headers=tokens.acme)
    assert len(response.data) < 3 * LISTED_VALUE_MAX_CHARS
    items = {item["id"]: item for item in response.get_json()["items"]}
    small, big = items[small_id], items[big_id]
    assert small["kwargs"] == {"value": 7} and "truncated" not in small
    assert big["truncated"] == {
        "kwargs": len(json.dumps(large["kwargs"])),
        "result": len(json.dumps({"echo": _big(LISTED_VALUE_MAX_CHARS)})),
        "error_message": LISTED_VALUE_MAX_CHARS + 1,
    }
    assert "kwargs" not in big and "result" not in big and "error_message" not in big
    assert big["args"] == [] and big["progress_message"] == _big(LISTED_VALUE_MAX_CHARS)

    full = client.get(f"/v1/jobs/{big_id}", headers=tokens.acme).get_json()
    assert full["kwargs"] == large["kwargs"] and "truncated" not in full
    assert full["error_message"] == _big(LISTED_VALUE_MAX_CHARS + 1)


def _dead_letters(rabbit: RabbitmqBroker, count: int) -> None:
    """``count`` dead letters of jobs the database does not know, straight into default.XQ."""
    connection = pika.BlockingConnection(rabbit.parameters)
    try:
        channel = connection.channel()
        for value in range(count):
            message: Message[Any] = Message(
                queue_name="default",
                actor_name="diagnostics.echo",
                args=(),
                kwargs={"value": value},
                options={},
            )
            channel.basic_publish("", xq_name("default"), message.encode())
    finally:
        connection.close()


def _dead(rabbit: RabbitmqBroker) -> int:
    return rabbit.get_queue_message_counts("default")[2]


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queues of every message fetched from RabbitMQ with basic_get, in order."""
    fetched: list[str] = []
    original = BlockingChannel.basic_get

    def counting(self: BlockingChannel, queue: str, *args: Any, **kwargs: Any) -> Any:
        fetched.append(queue)
        return original(self, queue, *args, **kwargs)

    monkeypatch.setattr(BlockingChannel, "basic_get", counting)
    return fetched


def test_listing_dead_letters_fetches_no_more_messages_than_the_limit(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker, fetches: list[str]
) -> None:
    _dead_letters(rabbit, 5)
    wait_until(lambda: _dead(rabbit) == 5, 5, "the dead letters")

    listed = client.get("/v1/dead-letters?limit=2", headers=tokens.admin).get_json()
    assert listed["count"] == 2 and len(listed["items"]) == 2
    assert fetches == [xq_name("default")] * 2
    assert _dead(rabbit) == 5  # Listing takes nothing away.

    everything = client.get("/v1/dead-letters", headers=tokens.admin).get_json()
    assert everything["count"] == 5


def test_a_redrive_fetches_no_more_messages_than_the_limit_and_leaves_the_rest(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker, fetches: list[str]
) -> None:
    _dead_letters(rabbit, 5)
    wait_until(lambda: _dead(rabbit) == 5, 5, "the dead letters")

    done = client.post("/v1/dead-letters/redrive", json={"limit": 2}, headers=tokens.admin)
    assert (done.get_json()["dry_run"], done.get_json()["count"]) == (False, 2)
    assert fetches == [xq_name("default")] * 2
    assert wait_until(lambda: _dead(rabbit) == 3, 5, "the re-driven letters to leave")
