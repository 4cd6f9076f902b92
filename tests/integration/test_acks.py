"""On real RabbitMQ: a message is acked only after its job's outcome is committed.

The worker thread does not wait for the outcome's commit (app.recording.acks); these tests watch
the consumer's acks themselves and read the job's committed state at that moment.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer

from actors import diagnostics
from app import db
from app.jobs import get_job, submit
from app.recording.claims import ClaimingConsumer
from app.states import JobState
from tests.support import gated_actors
from tests.support.locks import job_row_held
from tests.support.waiting import wait_for_state, wait_until


def _committed_state(job_id: str) -> str | None:
    """The job's state as another connection sees it, outside any write transaction."""
    connection = db.get_engine().raw_connection()
    try:
        cursor = connection.cursor()
        placeholder = "?" if db.get_engine().dialect.name == "sqlite" else "%s"
        cursor.execute(f"SELECT state FROM jobs WHERE id = {placeholder}", (job_id,))
        row = cursor.fetchone()
        connection.rollback()
        return None if row is None else str(row[0])
    finally:
        connection.close()


@pytest.fixture
def acks(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Each acked message id, with its job's committed state when the ack was sent."""
    seen: dict[str, str | None] = {}
    real_ack = _RabbitmqConsumer.ack
    real_settle = ClaimingConsumer._settle

    def spying_ack(consumer: Any, message: MessageProxy) -> None:
        seen[message.message_id] = _committed_state(message.message_id)
        real_ack(consumer, message)  # type: ignore[no-untyped-call]

    def spying_settle(consumer: ClaimingConsumer, message: MessageProxy, *, ack: bool) -> None:
        # Where a worker's consumer releases an ack for the wire (sent with others).
        if ack:
            seen[message.message_id] = _committed_state(message.message_id)
        real_settle(consumer, message, ack=ack)

    monkeypatch.setattr(_RabbitmqConsumer, "ack", spying_ack)
    monkeypatch.setattr(ClaimingConsumer, "_settle", spying_settle)
    return seen


def test_every_message_is_acked_after_its_outcome_is_committed(
    acks: dict[str, str | None], worker: dramatiq.Worker
) -> None:
    ids = [submit(diagnostics.noop).id for _ in range(30)]

    wait_until(lambda: set(ids) <= set(acks), 30, "30 acks")
    assert {acks[job_id] for job_id in ids} == {"succeeded"}


def test_an_outcome_held_up_in_the_database_holds_the_ack(
    acks: dict[str, str | None], worker: dramatiq.Worker, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    job = submit(gated_actors.until_file, kwargs={"path": str(go)})
    wait_for_state(job.id, states={JobState.RUNNING})

    with job_row_held(job.id):
        go.touch()  # The actor returns; its outcome's commit must wait.
        threading.Event().wait(1.0)
        assert job.id not in acks
        assert _committed_state(job.id) == "running"

    wait_until(lambda: job.id in acks, 20, "the ack once the commit went through")
    assert acks[job.id] == "succeeded"
    assert get_job(job.id).state == "succeeded"
