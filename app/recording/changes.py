"""The changes a worker hands to the group committer: a start, or an outcome.

Built by the tracking middleware, applied by :func:`app.recording.batch.apply_changes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dramatiq.broker import MessageProxy

from app.states import JobState


@dataclass(frozen=True)
class StartAttempt:
    """Start the next attempt of the job of ``message``; the result is the attempt
    number, or None when the message must not run."""

    message: MessageProxy
    redelivered: bool

    @property
    def job_id(self) -> str:
        return self.message.message_id


@dataclass(frozen=True)
class RecordOutcome:
    """Move the job from running ``attempt`` to ``to_state``; the result is None."""

    job_id: str
    attempt: int
    to_state: JobState
    values: dict[str, Any]
    data: dict[str, Any] | None


StateChange = StartAttempt | RecordOutcome
