"""A periodic actor ticking every minute, for the scheduler tests (and their CLIs)."""

from __future__ import annotations

import dramatiq

import actors  # noqa: F401  (jobstack's broker and actors first)
from app.cron import cron


@dramatiq.actor(actor_name="tests.tick", periodic=cron("* * * * *"))
def tick() -> str:
    return "tock"
