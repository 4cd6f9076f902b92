"""Starts claimed in batches as messages arrive (app.recording.claims), on real RabbitMQ.

The worker's consumer commits the starts of everything delivered together before any
worker thread takes one; these tests hold it to what the start promised before: a
cancelled job never starts, wherever its message waits, and a message delivered twice
runs once. (A worker killed before the shared commit: tests/acceptance/test_claims.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.jobs import get_job, list_events, submit
from app.messages import message_for
from app.middleware.cancellation import Cancellation
from app.operations import control
from app.recording import claims
from app.states import JobState
from tests.integration import test_actors
from tests.support import gated_actors
from tests.support.waiting import wait_for_state, wait_until
from tests.support.workers import running_worker


def _cancellation(broker: RabbitmqBroker) -> Cancellation:
    return next(m for m in broker.middleware if isinstance(m, Cancellation))


def _ready(broker: RabbitmqBroker) -> int:
    return int(broker.channel.queue_declare("default", passive=True).method.message_count)


def test_a_job_cancelled_while_claimed_ahead_of_a_free_thread_never_starts(
    rabbit: RabbitmqBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_actors.RUNS.clear()
    go = tmp_path / "go"
    # Claimed jobs may wait for a thread up to a second here (5 ms by default, which on a
    # slow machine may claim nothing ahead); a short backlog first gives the worker its
    # rate of finishing jobs, and it claims ahead of its single thread from then on.
    monkeypatch.setattr(claims, "CLAIM_AHEAD_SECONDS", 1.0)
    backlog = [submit(test_actors.counted).id for _ in range(5)]
    with running_worker(rabbit, threads=1):
        for warm_up in backlog:
            wait_for_state(warm_up)
        blocker = submit(gated_actors.until_file, kwargs={"path": str(go)})
        wait_for_state(blocker.id, {JobState.RUNNING})

        waiting = submit(test_actors.counted)
        # Claimed (running in the database) while the only thread is still busy.
        wait_for_state(waiting.id, {JobState.RUNNING})
        assert control.cancel(waiting.id).state == "running"
        wait_until(
            lambda: _cancellation(rabbit).running.cancel_pending(waiting.id),
            10,
            "the worker to hear of the cancellation",
        )
        go.touch()
        done = wait_for_state(waiting.id)

    assert done.state == "cancelled"
    assert waiting.id not in test_actors.RUNS  # its actor never ran
    kinds = [e.kind for e in list_events(waiting.id)]
    assert kinds[-3:] == ["started", "cancel_requested", "cancelled"]
    assert get_job(blocker.id).state == "succeeded"


def test_a_job_cancelled_while_its_message_waits_unclaimed_in_the_prefetch_never_starts(
    rabbit: RabbitmqBroker, tmp_path: Path
) -> None:
    test_actors.RUNS.clear()
    go = tmp_path / "go"
    with running_worker(rabbit, threads=1):
        blocker = submit(gated_actors.until_file, kwargs={"path": str(go)})
        wait_for_state(blocker.id, {JobState.RUNNING})
        waiting = submit(test_actors.counted)
        # Delivered to the worker (nothing ready in RabbitMQ), not claimed: a fresh
        # consumer claims no further ahead than its one thread.
        wait_until(lambda: _ready(rabbit) == 0, 10, "the message in the worker's prefetch")
        assert get_job(waiting.id).state == "queued"

        assert control.cancel(waiting.id).state == "cancelled"
        go.touch()
        wait_for_state(blocker.id)
        wait_until(lambda: rabbit.get_queue_message_counts("default") == (0, 0, 0), 10, "acks")
        # The skipped message was acked: nothing comes back after the worker stops.

    assert waiting.id not in test_actors.RUNS
    assert get_job(waiting.id).state == "cancelled"
    assert _ready(rabbit) == 0


def test_a_message_delivered_twice_in_one_batch_runs_once(rabbit: RabbitmqBroker) -> None:
    test_actors.RUNS.clear()
    job = submit(test_actors.counted)
    # A second copy, as a relay re-publishing a message whose confirm it missed sends it.
    rabbit.enqueue(message_for(get_job(job.id)))
    wait_until(lambda: _ready(rabbit) == 2, 10, "both copies in the queue")

    with running_worker(rabbit, threads=4):
        done = wait_for_state(job.id)
        wait_until(lambda: _ready(rabbit) == 0, 10, "both copies taken")

    assert [job.id] == test_actors.RUNS
    assert (done.state, done.attempts) == ("succeeded", 1)
    assert [e.kind for e in list_events(job.id)].count("started") == 1
    assert _ready(rabbit) == 0  # both were acked, none returned at the worker's stop
