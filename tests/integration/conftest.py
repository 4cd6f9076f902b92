"""Real RabbitMQ: the process's jobstack broker, emptied before each test, and a worker."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.config import load_settings
from tests.support.services import reachable, require
from tests.support.workers import running_worker


@pytest.fixture(scope="session")
def rabbitmq_broker() -> RabbitmqBroker:
    settings = load_settings()
    require(reachable(settings.broker_url, 5672), f"RabbitMQ at {settings.broker_url}")
    import actors  # noqa: F401  (declares the actors on the broker)
    import tests.integration.test_actors  # noqa: F401
    from app.broker import broker

    assert isinstance(broker, RabbitmqBroker), "integration tests need an amqp:// broker URL"
    # The dramatiq CLI emits this in each worker process; it starts TimeLimit's timer.
    broker.emit_after("process_boot")
    return broker


@pytest.fixture
def rabbit(rabbitmq_broker: RabbitmqBroker, clean_db: str) -> RabbitmqBroker:
    """The broker with every declared queue (and its .DQ and .XQ) purged."""
    for queue in rabbitmq_broker.get_declared_queues():
        rabbitmq_broker.declare_queue(queue, ensure=True)
    rabbitmq_broker.flush_all()
    return rabbitmq_broker


@pytest.fixture
def worker(rabbit: RabbitmqBroker) -> Iterator[dramatiq.Worker]:
    with running_worker(rabbit) as running:
        yield running
