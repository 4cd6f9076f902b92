"""Unique jobs: while one job of an actor with given arguments is waiting or running,
submitting the same again returns it instead of a new one.

Actors opt in with ``unique_for=<seconds>``: a job is a duplicate of an active job
(scheduled, queued, running, retrying) with the same key, enforced by a partial unique
index, or of any job with that key created in the last ``unique_for`` seconds. The key
is a hash of the actor and its arguments, or of what the actor's ``unique_key`` option
(a function of args and kwargs) returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import dramatiq
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.models import Job
from app.states import JobState
from app.timeutil import utcnow

ACTIVE = [
    s.value for s in (JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)
]


def unique_key_for(
    actor: dramatiq.Actor[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> str | None:
    """The job's unique key, or None for an actor that does not ask for uniqueness."""
    if actor.options.get("unique_for") is None:
        return None
    key_function = actor.options.get("unique_key")
    material = key_function(*args, **kwargs) if key_function else [list(args), kwargs]
    text = json.dumps([actor.actor_name, material], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_duplicate(
    session: Session, actor: dramatiq.Actor[Any, Any], tenant: str, key: str
) -> Job | None:
    """The active job with ``key``, else the newest one created within ``unique_for``."""
    window = timedelta(seconds=float(actor.options["unique_for"]))
    return session.scalars(
        select(Job)
        .where(
            Job.tenant == tenant,
            Job.unique_key == key,
            or_(Job.state.in_(ACTIVE), Job.created_at > utcnow() - window),
        )
        .order_by(Job.state.in_(ACTIVE).desc(), Job.created_at.desc())
        .limit(1)
    ).one_or_none()
