"""jobstack's RabbitMQ broker for tests that need the real server."""

from __future__ import annotations

import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from app.config import load_settings
from tests.support.services import reachable, require


def real_broker() -> RabbitmqBroker:
    """The process's jobstack broker with every actor declared; fails in CI without RabbitMQ."""
    settings = load_settings()
    require(reachable(settings.broker_url, 5672), f"RabbitMQ at {settings.broker_url}")
    import actors  # noqa: F401  (declares the actors on the broker)
    import tests.integration.test_actors  # noqa: F401
    from app.broker import broker

    assert isinstance(broker, RabbitmqBroker), "these tests need an amqp:// broker URL"
    return broker


def purge(broker: RabbitmqBroker) -> None:
    """Empty every declared queue with its delay and dead-letter queues."""
    for queue in broker.get_declared_queues():
        broker.declare_queue(queue, ensure=True)
    broker.flush_all()


def delete_queue(broker: RabbitmqBroker, name: str) -> None:
    """Delete a test's own queue with its delay and dead-letter queues, and forget it.

    On a connection of its own: the test may have left the broker's thread channel closed.
    """
    connection = pika.BlockingConnection(broker.parameters)
    try:
        channel = connection.channel()
        for doomed in (name, dq_name(name), xq_name(name)):
            channel.queue_delete(doomed)
    finally:
        connection.close()
    broker.queues.discard(name)
    broker.delay_queues.discard(dq_name(name))
