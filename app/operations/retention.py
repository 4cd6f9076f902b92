"""Pruning finished jobs and their events, in short batches."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, select

from app import db
from app.models import Job, JobEvent
from app.states import TERMINAL_STATES
from app.timeutil import utcnow

logger = logging.getLogger(__name__)


def prune_finished(days: float, batch: int) -> int:
    """Delete jobs finished more than ``days`` ago; returns how many.

    Each batch is its own short transaction, so the tables are never locked for long and
    workers keep recording outcomes while a large backlog is pruned.
    """
    cutoff = utcnow() - timedelta(days=days)
    finished = [state.value for state in TERMINAL_STATES]
    total = 0
    while True:
        with db.session_scope() as session:
            ids = list(
                session.scalars(
                    select(Job.id)
                    .where(Job.state.in_(finished), Job.finished_at < cutoff)
                    .limit(batch)
                )
            )
            if ids:
                session.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
                session.execute(delete(Job).where(Job.id.in_(ids)))
        total += len(ids)
        if len(ids) < batch:
            break
    logger.info("Pruned %d job(s) finished before %s.", total, cutoff.isoformat())
    return total
