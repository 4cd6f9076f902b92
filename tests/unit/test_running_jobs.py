"""The forced interruption of a cancelled job never lands after the job stopped itself."""

from __future__ import annotations

import threading
import time

import pytest

from app.context import JobContext
from app.errors import JobCancelled
from app.operations.cancellation import RunningJobs


def _run_in_thread(context: JobContext, running: RunningJobs, body: object) -> list[str]:
    """Run ``body`` as the job's code in a thread registered for ``context``."""
    seen: list[str] = []

    def work() -> None:
        running.add(context)
        try:
            body()  # type: ignore[operator]
            seen.append("returned")
        except JobCancelled:
            seen.append("cancelled")
            # The hooks that record the stop run now; a late interruption would land here.
            try:
                time.sleep(0.3)
                seen.append("recorded")
            except JobCancelled:
                seen.append("interrupted while recording")
        finally:
            running.remove(context.id)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(5)
    return seen


def test_a_job_that_stopped_at_its_checkpoint_is_not_interrupted_when_the_grace_ends() -> None:
    running = RunningJobs(grace=0.1)
    context = JobContext(id="job-1", attempt=1)

    def stops_at_the_end_of_the_grace() -> None:
        while not context.cancel_requested.is_set():
            time.sleep(0.01)
        time.sleep(0.08)  # Checks just before the grace period ends.
        context.checkpoint()

    cancel = threading.Timer(0.05, running.cancel, args=("job-1",))
    cancel.start()
    assert _run_in_thread(context, running, stops_at_the_end_of_the_grace) == [
        "cancelled",
        "recorded",
    ]


def test_a_job_that_never_checks_is_interrupted_after_the_grace() -> None:
    running = RunningJobs(grace=0.1)
    context = JobContext(id="job-2", attempt=1)

    def never_checks() -> None:
        for _ in range(300):
            time.sleep(0.01)

    threading.Timer(0.05, running.cancel, args=("job-2",)).start()
    assert _run_in_thread(context, running, never_checks)[0] == "cancelled"


@pytest.mark.parametrize("stopped", [True, False])
def test_the_interruption_is_skipped_only_for_a_stopped_job(stopped: bool) -> None:
    running = RunningJobs(grace=0.1)
    context = JobContext(id="job-3", attempt=1)
    running.add(context)
    if stopped:
        context.stopped.set()
    entry = running._jobs["job-3"]
    # The interruption targets a thread id that is no thread (nothing is raised anywhere).
    entry.thread_id = 0
    running._force("job-3", entry)
    assert entry.forced is not stopped
