"""Open event streams counted in the database, so that the per-token and per-tenant limits
hold across every API process and host.

A slot is taken by the Flask view that opens a stream and given back when the stream ends.
The process serving the stream refreshes ``seen_at``; a slot left by a process that died is
not counted once it is older than :data:`STALE_AFTER`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from dramatiq.message import generate_unique_id
from sqlalchemy import delete, func, select, update

from app import db
from app.errors import JobstackError
from app.models import ApiToken, EventStream
from app.timeutil import utcnow

#: Seconds between two refreshes of a process's open slots.
REFRESH_SECONDS = 10.0
#: A slot not refreshed for this long belongs to a process that is gone.
STALE_AFTER = timedelta(seconds=3 * REFRESH_SECONDS)


class TooManyStreams(JobstackError):
    """The token or its tenant already holds as many open streams as allowed."""


def take(token_id: str, tenant: str, job_id: str, *, per_token: int, per_tenant: int) -> str:
    """A slot for a new stream of ``job_id``; raises TooManyStreams over a limit.

    Two streams opened in the same instant may both pass the count: the limit can be
    exceeded by the number of API threads, never more.
    """
    fresh = EventStream.seen_at > utcnow() - STALE_AFTER
    with db.session_scope() as session:
        by_token = session.scalar(
            select(func.count()).where(EventStream.token_id == token_id, fresh)
        )
        if (by_token or 0) >= per_token:
            raise TooManyStreams(
                f"this token already has {by_token} open event streams (the limit is "
                f"{per_token}); close one or wait for it to end"
            )
        by_tenant = session.scalar(select(func.count()).where(EventStream.tenant == tenant, fresh))
        if (by_tenant or 0) >= per_tenant:
            raise TooManyStreams(
                f"tenant {tenant!r} already has {by_tenant} open event streams (the limit "
                f"is {per_tenant})"
            )
        slot = generate_unique_id()
        now = utcnow()
        session.add(
            EventStream(
                id=slot, token_id=token_id, tenant=tenant, job_id=job_id, opened_at=now, seen_at=now
            )
        )
    return slot


def give_back(slots: Collection[str]) -> None:
    if slots:
        with db.session_scope() as session:
            session.execute(delete(EventStream).where(EventStream.id.in_(list(slots))))


def refresh(slots: Collection[str]) -> None:
    """Mark this process's slots as still open; old stale rows are removed on the way."""
    now = utcnow()
    with db.session_scope() as session:
        if slots:
            session.execute(
                update(EventStream).where(EventStream.id.in_(list(slots))).values(seen_at=now)
            )
        session.execute(delete(EventStream).where(EventStream.seen_at < now - 2 * STALE_AFTER))


def revoked(token_ids: Collection[str]) -> set[str]:
    """Which of ``token_ids`` have been revoked (or deleted)."""
    if not token_ids:
        return set()
    wanted = set(token_ids)
    with db.session_scope() as session:
        live = set(
            session.scalars(
                select(ApiToken.id).where(ApiToken.id.in_(wanted), ApiToken.revoked_at.is_(None))
            )
        )
    return wanted - live
