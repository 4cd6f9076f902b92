"""Each cron schedule: its spec in words, the next tick, the last ticks and their outcomes,
and the ticks missed since the last one (no job for a tick that is due)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
import pendulum
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.dashboard.cron_words import describe
from app.defaults import CRON_KEY_PREFIX
from app.models import DEFAULT_TENANT, Job

#: A tick counts as missed once it is this late without a job.
MISSED_AFTER = timedelta(minutes=2)
#: Ticks listed per schedule, and the most missed ticks counted.
RECENT_TICKS = 5
MAX_COUNTED = 1000


@dataclass(frozen=True)
class ScheduleView:
    actor: str
    spec: str
    words: str
    next_run_at: datetime
    recent: list[Job]
    missed: int
    """Ticks due since the last one that have no job ("≥ MAX_COUNTED" when capped)."""


def _missed(spec: object, last_tick: datetime | None, now: datetime) -> int:
    if last_tick is None:
        return 0  # Never ran: nothing tells since when the scheduler should have run.
    due_by = pendulum.instance(now - MISSED_AFTER)
    tick = pendulum.instance(last_tick)
    count = 0
    while count < MAX_COUNTED:
        tick = spec.next_valid_date(tick)  # type: ignore[attr-defined]
        if tick > due_by:
            break
        count += 1
    return count


def schedule_views(session: Session, broker: dramatiq.Broker, now: datetime) -> list[ScheduleView]:
    """Every periodic actor (cron jobs are jobstack's own: the ``default`` tenant's)."""
    views = []
    for name in sorted(broker.get_declared_actors()):
        spec = broker.get_actor(name).options.get("periodic")
        if spec is None:
            continue
        recent = list(
            session.scalars(
                select(Job)
                .where(
                    Job.tenant == DEFAULT_TENANT,
                    Job.actor == name,
                    Job.idempotency_key.like(f"{CRON_KEY_PREFIX}%"),
                )
                .order_by(Job.created_at.desc())
                .limit(RECENT_TICKS)
            )
        )
        last_tick = recent[0].created_at.replace(second=0, microsecond=0) if recent else None
        next_run = spec.next_valid_date(pendulum.instance(now))
        views.append(
            ScheduleView(
                actor=name,
                spec=str(spec),
                words=describe(str(spec)),
                next_run_at=datetime.fromtimestamp(next_run.timestamp(), UTC),
                recent=recent,
                missed=_missed(spec, last_tick, now),
            )
        )
    return views
