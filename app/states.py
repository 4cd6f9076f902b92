"""The job lifecycle: its states and the transitions between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Each state and the states it may move to. ``running -> running`` is a redelivery
#: after a worker died mid-job: the job starts again as a new attempt. ``queued`` and
#: ``retrying`` fail without running when RabbitMQ dead-lettered the message by itself
#: (a quorum queue's delivery limit; :func:`app.operations.dead_letters.sweep`).
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SCHEDULED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {
            JobState.RUNNING,
            JobState.SUCCEEDED,
            JobState.RETRYING,
            JobState.FAILED,
            JobState.CANCELLED,
        }
    ),
    JobState.RETRYING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}

#: States a job never leaves on its own.
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def is_allowed(from_state: JobState, to_state: JobState) -> bool:
    """Whether a job in ``from_state`` may move to ``to_state``."""
    return to_state in ALLOWED_TRANSITIONS[from_state]
