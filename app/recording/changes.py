"""The changes a worker hands to the group committer: a start, or an outcome.

Built by the tracking middleware, applied by :func:`app.recording.batch.apply_changes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dramatiq.broker import MessageProxy

from app.states import JobState


@dataclass(frozen=True)
class Deferred:
    """A start put off: the message came back from RabbitMQ while the worker that
    started the job's current attempt still runs it (its connection was lost, not the
    worker). Running it now would run the job twice; it is sent again after ``seconds``,
    by when that attempt has ended or its worker is known to be gone."""

    seconds: float


@dataclass(frozen=True)
class StartAttempt:
    """Start the next attempt of the job of ``message``; the result is the attempt
    number, None when the message must not run, or :class:`Deferred`."""

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
#: What applying a change gives: a start's attempt number, None or Deferred; None for
#: an outcome.
ChangeResult = int | Deferred | None
