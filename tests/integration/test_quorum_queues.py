"""jobstack on quorum queues (JOBSTACK_QUEUE_TYPE=quorum; ``tox -e quorum``): the queues it
declares, dead letters that listing does not wear out, and messages RabbitMQ dead-letters
by itself past the delivery limit."""

from __future__ import annotations

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker

from app.config import load_settings
from app.jobs import get_job, submit
from app.operations.dead_letters import DeadLetterFilter, process, sweep
from app.rabbitmq.queue_arguments import (
    QUORUM,
    dead_letter_queue_arguments,
    delay_queue_arguments,
    job_queue_arguments,
)
from tests.support.waiting import wait_for_state, wait_until
from tests.support.workers import running_worker

pytestmark = pytest.mark.quorum


def _dead(rabbit: RabbitmqBroker) -> int:
    return rabbit.get_queue_message_counts("default")[2]


def test_every_queue_jobstack_declares_is_a_quorum_queue(rabbit: RabbitmqBroker) -> None:
    rabbit.declare_queue("default", ensure=True)
    expected = {
        "default": job_queue_arguments(
            "default", queue_type=QUORUM, max_priority=None, delivery_limit=20
        ),
        "default.DQ": delay_queue_arguments("default", queue_type=QUORUM, max_priority=None),
        "default.XQ": dead_letter_queue_arguments(
            queue_type=QUORUM, message_ttl_ms=DEAD_MESSAGE_TTL
        ),
    }
    assert "x-max-priority" not in expected["default"]
    connection = pika.BlockingConnection(rabbit.parameters)
    try:
        for name, arguments in expected.items():
            # The same arguments are accepted, and RabbitMQ compares a re-declaration's
            # every argument with the queue's own: the queue has exactly these.
            connection.channel().queue_declare(name, durable=True, arguments=arguments)
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                classic = {**arguments, "x-queue-type": "classic"}
                connection.channel().queue_declare(name, durable=True, arguments=classic)
            assert refused.value.reply_code == 406
            assert "inequivalent arg 'x-queue-type'" in refused.value.reply_text, name
    finally:
        connection.close()


def test_listing_dead_letters_counts_no_delivery(
    rabbit: RabbitmqBroker, worker: dramatiq.Worker
) -> None:
    job = submit("diagnostics.fail", kwargs={"times": 1}, max_retries=0)
    assert wait_for_state(job.id).state == "failed"
    wait_until(lambda: _dead(rabbit) == 1, 5, "the dead letter")

    for _ in range(25):  # More than RabbitMQ 4's default delivery limit (20).
        assert [letter.job_id for letter in process(rabbit, DeadLetterFilter(), redrive=False)] == [
            job.id
        ]

    assert _dead(rabbit) == 1
    channel = pika.BlockingConnection(rabbit.parameters).channel()
    method, properties, _body = channel.basic_get("default.XQ", auto_ack=False)
    assert method is not None
    assert (properties.headers or {}).get("x-delivery-count", 0) == 0
    assert (properties.headers or {})["x-first-death-reason"] == "rejected"  # kept as it was
    channel.connection.close()


def test_a_message_rabbitmq_dead_letters_by_itself_fails_its_job_and_can_be_redriven(
    rabbit: RabbitmqBroker,
) -> None:
    job = submit("diagnostics.echo", kwargs={"value": "late"})
    limit = load_settings().quorum_delivery_limit
    # A message handed out and returned more often than the limit, as by consumers that
    # keep dying before they start it: RabbitMQ moves it to default.XQ by itself.
    for _ in range(limit + 1):
        connection = pika.BlockingConnection(rabbit.parameters)
        method, _properties, _body = connection.channel().basic_get("default", auto_ack=False)
        assert method is not None
        connection.close()
    wait_until(lambda: _dead(rabbit) == 1, 5, "RabbitMQ's own dead letter")
    assert get_job(job.id).state == "queued"  # Nothing recorded its end...

    assert sweep(rabbit) == [job.id]  # ...until the sweep.
    failed = get_job(job.id)
    assert (failed.state, failed.error_type) == ("failed", "DeliveryLimitExceeded")
    assert sweep(rabbit) == []  # Once.
    assert _dead(rabbit) == 1  # The letter stays, to be re-driven.

    with running_worker(rabbit):
        redriven = process(rabbit, DeadLetterFilter(job_id=job.id), redrive=True)
        assert [letter.job_id for letter in redriven] == [job.id]
        done = wait_for_state(job.id, timeout=15)
    assert (done.state, done.result) == ("succeeded", "late")
    assert _dead(rabbit) == 0
