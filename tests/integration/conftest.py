"""Real RabbitMQ: the process's jobstack broker, emptied before each test, and a worker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from api import create_app
from app.tokens import create_token
from tests.support.asgi_server import serving_in_thread
from tests.support.rabbit import purge, real_broker
from tests.support.workers import running_worker


@pytest.fixture(scope="session")
def rabbitmq_broker() -> RabbitmqBroker:
    broker = real_broker()
    # The dramatiq CLI emits this in each worker process; it starts TimeLimit's timer.
    broker.emit_after("process_boot")
    return broker


@pytest.fixture
def rabbit(rabbitmq_broker: RabbitmqBroker, clean_db: str) -> RabbitmqBroker:
    """The broker with every declared queue (and its .DQ and .XQ) purged."""
    purge(rabbitmq_broker)
    return rabbitmq_broker


@pytest.fixture
def worker(rabbit: RabbitmqBroker) -> Iterator[dramatiq.Worker]:
    with running_worker(rabbit) as running:
        yield running


@dataclass(frozen=True)
class Tokens:
    """Bearer headers for two tenants, a read-only caller and an admin."""

    acme: dict[str, str]
    globex: dict[str, str]
    reader: dict[str, str]
    admin: dict[str, str]


def _bearer(tenant: str, scopes: set[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(tenant, scopes)}"}


@pytest.fixture
def client(rabbit: RabbitmqBroker) -> FlaskClient:
    """A test client of the real API on the test database and real RabbitMQ."""
    return create_app({"TESTING": True}).test_client()


@pytest.fixture
def served_port(rabbit: RabbitmqBroker) -> Iterator[int]:
    """The port of the API served as ``jobstack api`` serves it (event streams need it)."""
    with serving_in_thread() as port:
        yield port


@pytest.fixture
def tokens(clean_db: str) -> Tokens:
    write = {"jobs:read", "jobs:write"}
    return Tokens(
        acme=_bearer("acme", write),
        globex=_bearer("globex", write),
        reader=_bearer("acme", {"jobs:read"}),
        admin=_bearer("ops", {"admin"}),
    )
