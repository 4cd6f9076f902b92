"""Housekeeping actors run by the scheduler."""

from __future__ import annotations

import dramatiq

from app.config import load_settings
from app.retention import prune_finished
from app.schedules import cron


@dramatiq.actor(
    actor_name="maintenance.prune_jobs",
    queue_name="low",
    periodic=cron("17 3 * * *"),
    time_limit=20 * 60 * 1000,
)
def prune_jobs() -> int:
    """Daily: delete jobs finished more than JOBSTACK_RETENTION_DAYS ago (and their events)."""
    settings = load_settings()
    return prune_finished(settings.retention_days, settings.retention_batch)
