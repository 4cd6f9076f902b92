"""Relays in every worker process on PostgreSQL share a backlog: each row is published
once, by whichever relay locked it (real PostgreSQL, whatever the suite's backend, and
real RabbitMQ)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.message import generate_unique_id
from sqlalchemy import func, insert, select

from app import db
from app.config import Settings
from app.models import Job
from app.outbox.relay import Relay
from app.states import JobState
from app.timeutil import utcnow
from tests.support.rabbit import delete_queue

QUEUE = "jobstack-relay-scaling-test"
ROWS = 3000
# Twelve batches, so that three relays each get some even if one starts a pass late.
SETTINGS = Settings(relay_grace=1.0, relay_interval=0.05, relay_batch=250)


class CountingRelay(Relay):
    """A relay that counts what its passes published."""

    published = 0
    #: Passed once before the first pass, so that every relay's first pass starts together.
    start_line: threading.Barrier | None = None

    def run_once(self) -> int:
        if self.start_line is not None:
            start_line, self.start_line = self.start_line, None
            start_line.wait(30)
        count = super().run_once()
        self.published += count
        return count


@pytest.fixture
def queue(rabbit: RabbitmqBroker) -> Iterator[str]:
    rabbit.declare_queue(QUEUE, ensure=True)
    rabbit.flush(QUEUE)
    yield QUEUE
    delete_queue(rabbit, QUEUE)


def _backlog(count: int) -> list[str]:
    """``count`` queued jobs whose publish never happened, long past the grace."""
    created = utcnow() - timedelta(minutes=5)
    ids = [generate_unique_id() for _ in range(count)]
    rows = [
        {
            "id": ids[n],
            "actor": "t.relayed",
            "queue": QUEUE,
            "args": [n],
            "kwargs": {},
            "state": JobState.QUEUED.value,
            "created_at": created + timedelta(microseconds=n),
            "updated_at": created,
            "last_event_seq": 1,
        }
        for n in range(count)
    ]
    with db.session_scope() as session:
        session.execute(insert(Job), rows)
    return ids


def _unpublished() -> int:
    with db.session_scope() as session:
        return (
            session.scalar(select(func.count()).select_from(Job).where(Job.published_at.is_(None)))
            or 0
        )


def _messages_in_queue(broker: RabbitmqBroker) -> Counter[str]:
    """The message ids in the queue, read off it."""
    connection = pika.BlockingConnection(broker.parameters)
    try:
        channel = connection.channel()
        ids: Counter[str] = Counter()
        for _method, properties, _body in channel.consume(
            QUEUE, auto_ack=True, inactivity_timeout=2
        ):
            if properties is None:
                break  # Nothing more for two seconds.
            ids[properties.message_id] += 1
        channel.cancel()
        return ids
    finally:
        connection.close()


@pytest.mark.parametrize("relays", [1, 3])
def test_relays_publish_a_backlog_each_row_once(
    rabbit: RabbitmqBroker, queue: str, postgres: str, relays: int
) -> None:
    jobs = _backlog(ROWS)
    running = [CountingRelay(rabbit, SETTINGS) for _ in range(relays)]
    start_line = threading.Barrier(relays)
    for n, relay in enumerate(running):
        relay.holder = f"relay-{n}"
        relay.start_line = start_line

    started = time.perf_counter()
    for relay in running:
        relay.start()
    deadline = started + 120
    while _unpublished() and time.perf_counter() < deadline:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    for relay in running:
        relay.stop()

    assert _unpublished() == 0
    assert _messages_in_queue(rabbit) == Counter(jobs)  # Every job once, none twice.
    counts = [relay.published for relay in running]
    assert sum(counts) == ROWS
    assert all(counts), counts  # Every relay took part: they ran at once.
    # The rate is reported, not asserted: it depends on the machine and its load.
    print(
        f"\n{relays} relay(s): {ROWS} rows in {elapsed:.2f}s = {ROWS / elapsed:,.0f} rows/s,"
        f" per relay {counts}"
    )
