"""Cron ticks: one job per tick of each schedule, however many schedulers send it.

periodiq sends a tick as a plain message with the option ``scheduled_at``. The job row
of a tick carries the idempotency key ``cron:<actor>:<minute of the tick, UTC>``; a second
scheduler's message for the same tick finds the key taken, is marked a duplicate, and is
skipped by the worker that receives it. The key is the minute, cron's resolution: a
scheduler sends at start-up for the current minute at whatever second it starts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.messages import AnyMessage

#: Message option: this tick's job already exists under another message id.
DUPLICATE_TICK_OPTION = "jobstack_duplicate_tick_of"
KEY_PREFIX = "cron:"


def tick_key(message: AnyMessage) -> str | None:
    """The idempotency key of a periodiq tick message; None for other messages."""
    scheduled_at = message.options.get("scheduled_at")
    if not scheduled_at:
        return None
    moment = datetime.fromisoformat(str(scheduled_at)).astimezone(UTC)
    moment = moment.replace(second=0, microsecond=0)
    return f"{KEY_PREFIX}{message.actor_name}:{moment.isoformat()}"
