"""Publishing many messages with one wait for RabbitMQ's confirms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.outbox.confirms import publisher_for
from tests.support.rabbit import delete_queue

QUEUE = "jobstack-publisher-test"


def _message(n: int) -> Message[Any]:
    return Message(queue_name=QUEUE, actor_name="t.x", args=(n,), kwargs={}, options={})


def _queue_depth(broker: RabbitmqBroker) -> int:
    connection = pika.BlockingConnection(broker.parameters)
    try:
        depth: int = connection.channel().queue_declare(QUEUE, passive=True).method.message_count
        return depth
    finally:
        connection.close()


@pytest.fixture
def broker(rabbit: RabbitmqBroker) -> Iterator[RabbitmqBroker]:
    rabbit.declare_queue(QUEUE, ensure=True)
    rabbit.flush(QUEUE)
    yield rabbit
    delete_queue(rabbit, QUEUE)


def test_a_batch_is_confirmed_whole_and_in_order(broker: RabbitmqBroker) -> None:
    messages = [_message(n) for n in range(300)]

    published = [confirmed.message_id for confirmed in publisher_for(broker).publish(messages)]

    assert published == [message.message_id for message in messages]
    assert _queue_depth(broker) == 300
    # The channel stays usable for the next batch.
    follow_up = _message(300)
    [confirmed] = publisher_for(broker).publish([follow_up])
    assert confirmed.message_id == follow_up.message_id
    assert _queue_depth(broker) == 301


def test_a_message_rabbitmq_cannot_route_is_not_reported_published(
    broker: RabbitmqBroker,
) -> None:
    # The broker believes the queue exists; RabbitMQ has lost it (deleted behind its back).
    connection = pika.BlockingConnection(broker.parameters)
    try:
        connection.channel().queue_delete(QUEUE)
    finally:
        connection.close()

    published = publisher_for(broker).publish([_message(1), _message(2)])

    assert published == []
