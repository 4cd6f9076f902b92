"""Real RabbitMQ: the process's jobstack broker, emptied before each test, and a worker."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

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
