"""Polling helpers: tests wait for real processes with deadlines, never fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from app.jobs import get_job
from app.models import Job
from app.states import TERMINAL_STATES, JobState

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_for_state(job_id: str, states: set[JobState] | None = None, timeout: float = 20) -> Job:
    """The job once it reaches one of ``states`` (default: any terminal state)."""
    wanted = {state.value for state in (states or TERMINAL_STATES)}

    def check() -> Job | None:
        job = get_job(job_id)
        return job if job.state in wanted else None

    return wait_until(check, timeout, f"job {job_id} to reach {sorted(wanted)}")
