"""Actors that only the integration tests use, declared on jobstack's broker."""

from __future__ import annotations

import contextlib
import threading
import time

import dramatiq

import app.broker  # noqa: F401  (the broker must exist before actors are declared)
from app.context import current_job

RUNS: list[str] = []
_lock = threading.Lock()


@dramatiq.actor(actor_name="tests.counted")
def counted() -> None:
    """Counts its executions in this process."""
    with _lock:
        RUNS.append(current_job().id)


@dramatiq.actor(actor_name="tests.slow", time_limit=500, max_retries=0)
def slow(seconds: float) -> None:
    """Runs past its 0.5 s time limit when ``seconds`` is larger."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


@dramatiq.actor(actor_name="tests.cooperative", max_retries=0)
def cooperative(seconds: float) -> None:
    """Works in small steps and checks for cancellation between them."""
    job = current_job()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.checkpoint()
        time.sleep(0.02)


@dramatiq.actor(actor_name="tests.stubborn", max_retries=3)
def stubborn(seconds: float) -> None:
    """Never checks for cancellation, and swallows errors: only an interruption stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            time.sleep(0.02)


@dramatiq.actor(actor_name="tests.step")
def step(seconds: float) -> None:
    """A short unit of work, for backlogs."""
    time.sleep(seconds)


#: Gates that tests open; ``gated`` jobs wait on them (the worker runs in the test process).
GATES: dict[str, threading.Event] = {}


@dramatiq.actor(actor_name="tests.gated", max_retries=0)
def gated(gate: str) -> None:
    """Holds its worker thread until the test opens ``gate`` (60 s at most)."""
    GATES[gate].wait(60)
