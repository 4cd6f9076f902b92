"""The job a worker thread is running, for actors to report progress."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from app import db
from app.transitions import append_event


@dataclass(frozen=True)
class JobContext:
    """Handle on the running job, given to actor code by :func:`current_job`."""

    id: str
    attempt: int
    correlation_id: str | None = None

    def progress(self, percent: int, message: str | None = None) -> None:
        """Record progress (0–100) and an optional message; visible on the job at once."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be between 0 and 100, not {percent}")
        with db.session_scope() as session:
            append_event(
                session,
                self.id,
                "progress",
                values={"progress": percent, "progress_message": message},
                data={"percent": percent, "message": message},
            )


_current: ContextVar[JobContext | None] = ContextVar("jobstack_current_job", default=None)


def current_job() -> JobContext:
    """The job this worker thread is running; raises outside of a tracked actor."""
    job = _current.get()
    if job is None:
        raise RuntimeError("current_job() is only available inside a running tracked actor")
    return job


def current_job_or_none() -> JobContext | None:
    """The job this thread runs, or None (for log filters)."""
    return _current.get()


def enter_job(job: JobContext | None) -> None:
    """Set (or clear, with None) the job of this worker thread."""
    _current.set(job)
