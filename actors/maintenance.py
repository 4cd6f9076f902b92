"""Housekeeping actors run by the scheduler."""

from __future__ import annotations

import dramatiq

from app.config import load_settings
from app.cron import cron
from app.operations.retention import prune_finished
from app.workloads.health import run_health_check


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


@dramatiq.actor(
    actor_name="maintenance.health_check",
    queue_name="low",
    periodic=cron("*/10 * * * *"),
    max_retries=0,
    time_limit=60 * 1000,
)
def health_check() -> dict[str, bool]:
    """Every 10 minutes: the API's /readyz, the database and the broker; see /v1/health/history."""
    check = run_health_check(load_settings().api_url, dramatiq.get_broker())
    return {
        "ok": check.ok,
        "api": check.api_ok,
        "database": check.database_ok,
        "broker": check.broker_ok,
    }
