"""The broker's nodes (several URLs in JOBSTACK_BROKER_URL) and its queue types."""

from __future__ import annotations

import pytest

from app.broker import JobstackRabbitmqBroker, create_broker
from app.config import Settings
from app.errors import ConfigurationError
from app.rabbitmq.nodes import amqp_urls
from app.rabbitmq.queue_arguments import (
    OUT_OF_REACH_DELIVERY_LIMIT,
    QUORUM,
    dead_letter_queue_arguments,
    delay_queue_arguments,
    job_queue_arguments,
)

NODES = (
    "amqp://u:p@rabbit-1:5672/%2F;amqp://u:p@rabbit-2:5672/%2F?heartbeat=5;amqp://u:p@rabbit-3/%2F"
)


def test_every_node_url_gets_heartbeat_and_blocked_timeout_unless_it_has_them() -> None:
    urls = amqp_urls(Settings(broker_url=NODES))

    assert [url.split("?")[0] for url in urls] == [
        "amqp://u:p@rabbit-1:5672/%2F",
        "amqp://u:p@rabbit-2:5672/%2F",
        "amqp://u:p@rabbit-3/%2F",
    ]
    assert all("blocked_connection_timeout=300" in url for url in urls)
    assert ["heartbeat=60" in url for url in urls] == [True, False, True]
    assert "heartbeat=5" in urls[1]


def test_a_broker_url_without_a_node_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names no broker"):
        amqp_urls(Settings(broker_url=" ; "))


def test_each_connection_gets_the_nodes_in_a_new_order() -> None:
    broker = JobstackRabbitmqBroker(
        idle_connection_seconds=30, url=amqp_urls(Settings(broker_url=NODES))
    )
    orders = {tuple(p.host for p in broker.parameters) for _ in range(200)}

    assert all(sorted(order) == ["rabbit-1", "rabbit-2", "rabbit-3"] for order in orders)
    # Every node comes first for some connections: they spread over the cluster.
    assert {order[0] for order in orders} == {"rabbit-1", "rabbit-2", "rabbit-3"}
    assert broker.parameters[0].heartbeat in (5, 60)


def test_an_unknown_queue_type_is_refused_by_name() -> None:
    with pytest.raises(
        ConfigurationError, match="JOBSTACK_QUEUE_TYPE must be one of classic, quorum"
    ):
        create_broker(Settings(queue_type="mirrored"))


def test_classic_queues_carry_priorities_and_quorum_queues_replication_arguments() -> None:
    classic = job_queue_arguments(
        "default", queue_type="classic", max_priority=9, delivery_limit=20
    )
    assert classic == {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "default.XQ",
        "x-max-priority": 9,
    }

    quorum = job_queue_arguments("default", queue_type=QUORUM, max_priority=9, delivery_limit=20)
    assert "x-max-priority" not in quorum  # A quorum queue refuses it.
    assert quorum["x-queue-type"] == QUORUM
    assert quorum["x-dead-letter-routing-key"] == "default.XQ"
    assert (quorum["x-dead-letter-strategy"], quorum["x-overflow"]) == (
        "at-least-once",
        "reject-publish",
    )
    assert quorum["x-delivery-limit"] == 20


def test_quorum_delay_and_dead_letter_queues_have_a_delivery_limit_out_of_reach() -> None:
    delay = delay_queue_arguments("default", queue_type=QUORUM, max_priority=9)
    dead = dead_letter_queue_arguments(queue_type=QUORUM, message_ttl_ms=1000)

    assert delay["x-delivery-limit"] == dead["x-delivery-limit"] == OUT_OF_REACH_DELIVERY_LIMIT
    assert OUT_OF_REACH_DELIVERY_LIMIT > 0  # -1 drops a message at once on RabbitMQ 3.10.
    assert dead == {
        "x-message-ttl": 1000,
        "x-queue-type": QUORUM,
        "x-delivery-limit": OUT_OF_REACH_DELIVERY_LIMIT,
    }
    assert dead_letter_queue_arguments(queue_type="classic", message_ttl_ms=1000) == {
        "x-message-ttl": 1000
    }
