"""The job a worker thread is running, for actors to report progress."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from app import db
from app.errors import InvalidProgress, JobCancelled, NotInJob
from app.transitions import append_event

#: Progress is written at most this often (seconds); reports in between are dropped,
#: except a report of 100%.
PROGRESS_INTERVAL = 0.5


@dataclass
class JobContext:
    """Handle on the running job, given to actor code by :func:`current_job`."""

    id: str
    attempt: int
    correlation_id: str | None = None
    #: Set when cancellation of this job was requested (broadcast or database flag).
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    #: Whether the job was interrupted after the grace period instead of stopping itself.
    cancel_forced: bool = False
    #: Set when the job stopped at a checkpoint: there is nothing left to interrupt.
    stopped: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = field(default=float("-inf"), repr=False)

    def checkpoint(self) -> None:
        """Raise :class:`JobCancelled` if this job's cancellation was requested.

        Call it between units of work: the job then stops cleanly, at a point of its
        choosing, instead of being interrupted wherever it is after the grace period.
        """
        if self.cancel_requested.is_set():
            # Before raising: the forced interruption, due when the grace period ends,
            # must not land in the hooks that record this stop (it would kill the thread).
            self.stopped.set()
            raise JobCancelled(f"job {self.id} was cancelled")

    def progress(self, percent: int, message: str | None = None) -> None:
        """Record progress (0–100) with an optional message; also a :meth:`checkpoint`.

        Writes are throttled to one per PROGRESS_INTERVAL seconds (100% is always written).
        """
        if not 0 <= percent <= 100:
            raise InvalidProgress(f"progress must be between 0 and 100, not {percent}")
        self.checkpoint()
        now = time.monotonic()
        if percent < 100 and now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
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
        raise NotInJob()
    return job


def current_job_or_none() -> JobContext | None:
    """The job this thread runs, or None (for log filters)."""
    return _current.get()


def enter_job(job: JobContext | None) -> None:
    """Set (or clear, with None) the job of this worker thread."""
    _current.set(job)
