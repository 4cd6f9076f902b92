"""Bare Dramatiq for the benchmark: its own broker, Dramatiq's default middleware, a no-op.

Imported by ``dramatiq bench.bare_actors`` in the worker and by the benchmark to publish;
it must not import jobstack's broker.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

QUEUE = "bench-bare"

broker = RabbitmqBroker(
    url=os.environ.get("JOBSTACK_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench.noop", queue_name=QUEUE)
def noop() -> None:
    """Do nothing."""
