"""Housekeeping actors run by the scheduler."""

from __future__ import annotations

import dramatiq

from app.config import load_settings
from app.cron import cron
from app.operations.dead_letters import sweep
from app.operations.retention import prune_finished
from app.rabbitmq.queue_arguments import QUORUM
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


@dramatiq.actor(
    actor_name="maintenance.sweep_dead_letters",
    queue_name="low",
    max_retries=0,
    time_limit=5 * 60 * 1000,
    # Only quorum queues dead-letter messages by themselves (past their delivery limit);
    # on classic queues there is nothing to sweep, so nothing is scheduled (periodiq
    # takes any "periodic" option, even None, as a schedule).
    **({"periodic": cron("* * * * *")} if load_settings().queue_type == QUORUM else {}),
)
def sweep_dead_letters() -> list[str]:
    """Every minute under quorum queues: fail the jobs whose messages RabbitMQ dead-lettered
    by itself past the delivery limit (they would stay queued or running); their ids."""
    return sweep(dramatiq.get_broker())
