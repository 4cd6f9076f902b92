"""Cron: declaring schedules (validated), one job per tick, and reading their state.

periodiq sends a tick as a plain message with the option ``scheduled_at``. The job row
of a tick carries the idempotency key ``cron:<actor>:<minute of the tick, UTC>``; a second
scheduler's message for the same tick finds the key taken, is marked a duplicate, and is
skipped by the worker that receives it. The key is the minute, cron's resolution: a
scheduler sends at start-up for the current minute at whatever second it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pendulum
import periodiq
from sqlalchemy import select

from app import db
from app.defaults import CRON_KEY_PREFIX
from app.errors import ConfigurationError
from app.messages import AnyMessage
from app.models import Job

#: Message option: this tick's job already exists under another message id.
DUPLICATE_TICK_OPTION = "jobstack_duplicate_tick_of"
KEY_PREFIX = CRON_KEY_PREFIX


def tick_key(message: AnyMessage) -> str | None:
    """The idempotency key of a periodiq tick message; None for other messages."""
    scheduled_at = message.options.get("scheduled_at")
    if not scheduled_at:
        return None
    moment = datetime.fromisoformat(str(scheduled_at)).astimezone(UTC)
    moment = moment.replace(second=0, microsecond=0)
    return f"{KEY_PREFIX}{message.actor_name}:{moment.isoformat()}"


FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron(spec: str) -> Any:
    """A periodiq schedule for ``periodic=``, in UTC, refusing specs periodiq misreads.

    Five fields (minute hour day-of-month month day-of-week) or an @alias periodiq knows;
    day-of-week 0 and 7 are Sunday.
    """
    text = spec.strip()
    fields = text.split()
    if text.startswith("@"):
        if text not in periodiq.CronSpec._named_spec:
            known = ", ".join(sorted(periodiq.CronSpec._named_spec))
            raise ConfigurationError(f"cron spec {spec!r}: unknown alias (known: {known})")
    elif len(fields) != 5:
        raise ConfigurationError(
            f"cron spec {spec!r}: needs 5 fields (minute hour day month weekday), "
            f"not {len(fields)}; seconds and years are not supported"
        )
    try:
        parsed = periodiq.cron(text)
    except (ValueError, IndexError, KeyError) as error:
        raise ConfigurationError(f"cron spec {spec!r} is invalid: {error}") from None
    # periodiq keeps out-of-range values (minute 61) and empty ranges (5-1): such a
    # schedule would never fire, or fire wrongly, without a word.
    for name, values, (low, high) in zip(FIELD_NAMES, parsed.astuple(), FIELD_RANGES, strict=True):
        if not values or min(values) < low or max(values) > high:
            raise ConfigurationError(
                f"cron spec {spec!r} is invalid: {name} must be within {low}-{high}"
            )
    return parsed


@dataclass(frozen=True)
class Schedule:
    actor: str
    cron: str
    next_run_at: datetime
    last_job: Job | None


def schedules(broker: dramatiq.Broker, *, tenant: str | None = None) -> list[Schedule]:
    """Every periodic actor with its next tick and the job of its latest tick."""
    now = pendulum.now("UTC")
    found = []
    for name in sorted(broker.get_declared_actors()):
        spec = broker.get_actor(name).options.get("periodic")
        if spec is None:
            continue
        query = (
            select(Job)
            .where(Job.actor == name, Job.idempotency_key.like(f"{KEY_PREFIX}%"))
            .order_by(Job.created_at.desc())
            .limit(1)
        )
        if tenant is not None:
            query = query.where(Job.tenant == tenant)
        with db.session_scope() as session:
            last = session.scalars(query).one_or_none()
        next_run = spec.next_valid_date(now)
        found.append(Schedule(name, str(spec), datetime.fromisoformat(next_run.isoformat()), last))
    return found
