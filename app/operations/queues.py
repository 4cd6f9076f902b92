"""Queue depths and consumers, read from the broker for operators."""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

#: What pika raises on a connection that was open and is no longer.
DROPPED = (pika.exceptions.StreamLostError, pika.exceptions.ConnectionClosed)


@dataclass(frozen=True)
class QueueStats:
    name: str
    ready: int
    delayed: int
    dead_letter: int
    consumers: int


def queue_stats(broker: dramatiq.Broker) -> list[QueueStats]:
    """One entry per declared queue: ready, delayed and dead-lettered messages, consumers."""
    names = sorted(broker.get_declared_queues())
    if isinstance(broker, StubBroker):
        return [
            QueueStats(
                name,
                broker.queues[name].qsize(),
                broker.queues[dq_name(name)].qsize(),
                len(broker.dead_letters_by_queue[name]),
                0,
            )
            for name in names
        ]
    assert isinstance(broker, RabbitmqBroker)
    return [_rabbitmq_stats(broker, name) for name in names]


def _rabbitmq_stats(broker: RabbitmqBroker, name: str) -> QueueStats:
    broker.declare_queue(name, ensure=True)
    for attempt in (1, 2):
        try:
            counts = [
                broker.channel.queue_declare(queue=queue, passive=True).method
                for queue in (name, dq_name(name), xq_name(name))
            ]
            break
        except pika.exceptions.AMQPError as error:
            del broker.connection  # The next caller gets a fresh connection.
            # A connection that was up and dropped (a restarted node, missed heartbeats)
            # is read again once on a fresh one: counting changes nothing. One that could
            # not be opened is not tried twice.
            if attempt == 2 or not isinstance(error, DROPPED):
                raise
    return QueueStats(
        name,
        ready=counts[0].message_count,
        delayed=counts[1].message_count,
        dead_letter=counts[2].message_count,
        consumers=counts[0].consumer_count,
    )


def broker_reachable(broker: dramatiq.Broker) -> str | None:
    """None when the broker answers, else what went wrong."""
    if not isinstance(broker, RabbitmqBroker):
        return None
    try:
        broker.connection.process_data_events(time_limit=0)
    except Exception as error:
        del broker.connection
        return f"{type(error).__name__}: {error}"
    return None
