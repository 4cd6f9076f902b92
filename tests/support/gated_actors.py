"""An actor that runs until a file appears, for tests of worker processes: the test
decides when the actor returns."""

from __future__ import annotations

import time
from pathlib import Path

import dramatiq

import actors  # noqa: F401  (jobstack's broker and actors first)


@dramatiq.actor(actor_name="tests.until_file", max_retries=0)
def until_file(path: str) -> str:
    deadline = time.monotonic() + 60
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "done"
