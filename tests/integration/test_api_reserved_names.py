"""Names the API does not let callers choose: queues the operator did not declare, the
internal tenant, and the idempotency keys of cron ticks."""

from __future__ import annotations

import uuid

import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from app.tokens import TokenError, create_token
from tests.integration.conftest import Tokens


def _queue_exists(broker: RabbitmqBroker, name: str) -> bool:
    connection = pika.BlockingConnection(broker.parameters)
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


@pytest.mark.parametrize("queue", ["anything", "default.XQ", "default.DQ", "critical.XQ"])
def test_a_queue_nobody_declared_is_refused_and_not_created(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker, queue: str
) -> None:
    new = queue == "anything"
    if new:
        queue = f"anything-{uuid.uuid4().hex[:8]}"  # Never created by an earlier run.
    declared = rabbit.get_declared_queues()
    body = {"actor": "diagnostics.noop", "kwargs": {}, "queue": queue}
    response = client.post("/v1/jobs", json=body, headers=tokens.acme)
    assert response.status_code == 422, response.get_json()
    assert f"queue {queue!r} is not declared" in str(response.get_json())
    assert rabbit.get_declared_queues() == declared
    if new:
        assert not _queue_exists(rabbit, queue)
        assert not _queue_exists(rabbit, f"{queue}.XQ")


def test_a_declared_queue_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    body = {"actor": "diagnostics.noop", "kwargs": {}, "queue": "low"}
    response = client.post("/v1/jobs", json=body, headers=tokens.acme)
    assert response.status_code == 202
    assert response.get_json()["queue"] == "low"


def test_a_tenant_cannot_use_the_idempotency_key_of_a_cron_tick(
    client: FlaskClient, tokens: Tokens
) -> None:
    body = {"actor": "diagnostics.noop", "kwargs": {}}
    key = {"Idempotency-Key": "cron:maintenance.prune_jobs:2026-12-02T03:00:00+00:00"}
    response = client.post("/v1/jobs", json=body, headers={**tokens.acme, **key})
    assert response.status_code == 422
    assert "reserved" in str(response.get_json())


@pytest.mark.parametrize("tenant", ["default", "Default", "system"])
def test_no_token_can_belong_to_an_internal_tenant(clean_db: str, tenant: str) -> None:
    with pytest.raises(TokenError, match="reserved"):
        create_token(tenant, {"jobs:read"})
