"""A quiet spell longer than two heartbeats: RabbitMQ drops the API's connections, and the
next operator request must not fail on one of them."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from app.broker import JobstackRabbitmqBroker
from app.config import load_settings
from app.operations.queues import queue_stats
from app.rabbitmq.nodes import amqp_urls
from tests.support.rabbit import delete_queue
from tests.support.services import reachable, require

#: RabbitMQ closes a connection that missed two 1 s heartbeats, 2-3 s into a silence: this
#: long, it is gone even on a loaded machine.
PAST_TWO_HEARTBEATS = 5.0


@pytest.fixture
def queue() -> Iterator[str]:
    """A throwaway queue name, with its delay and dead-letter queues deleted at the end."""
    name = f"idle-{uuid.uuid4().hex[:8]}"
    yield name
    cleaner = JobstackRabbitmqBroker(idle_connection_seconds=30, url=amqp_urls(load_settings()))
    delete_queue(cleaner, name)


def _broker(queue: str, idle_connection_seconds: float) -> JobstackRabbitmqBroker:
    settings = dataclasses.replace(load_settings(), broker_heartbeat=1)
    require(reachable(settings.broker_url, 5672), f"RabbitMQ at {settings.broker_url}")
    broker = JobstackRabbitmqBroker(
        idle_connection_seconds=idle_connection_seconds, url=amqp_urls(settings)
    )
    broker.declare_queue(queue)
    return broker


def test_the_queue_listing_after_a_quiet_spell_opens_a_new_connection_first(
    queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = _broker(queue, idle_connection_seconds=0.5)
    try:
        before = queue_stats(broker)
        stale = broker.connection
        time.sleep(PAST_TWO_HEARTBEATS)

        with caplog.at_level(logging.ERROR, logger="pika"):
            after = queue_stats(broker)

        assert [stats.name for stats in after] == [stats.name for stats in before] == [queue]
        assert broker.connection is not stale and broker.connection.is_open
        # Replaced before use: pika never met the dropped connection.
        assert "connection close detected" not in caplog.text
    finally:
        broker.close()


def test_the_queue_listing_reads_again_once_when_its_connection_was_dropped(
    queue: str,
) -> None:
    # Never replaced for idleness: the listing meets the dropped connection itself.
    broker = _broker(queue, idle_connection_seconds=float("inf"))
    try:
        queue_stats(broker)
        stale = broker.connection
        time.sleep(PAST_TWO_HEARTBEATS)

        after = queue_stats(broker)

        assert [(stats.name, stats.ready, stats.dead_letter) for stats in after] == [(queue, 0, 0)]
        assert broker.connection is not stale and not stale.is_open
    finally:
        broker.close()
