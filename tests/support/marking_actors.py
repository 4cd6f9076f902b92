"""An actor that appends its job's id to a file, for tests of worker processes: the file
says which jobs really ran, and how often."""

from __future__ import annotations

from pathlib import Path

import dramatiq

import actors  # noqa: F401  (jobstack's broker and actors first)
from app.context import current_job


@dramatiq.actor(actor_name="tests.mark", max_retries=0)
def mark(path: str) -> None:
    with Path(path).open("a") as marks:
        marks.write(current_job().id + "\n")
