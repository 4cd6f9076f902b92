"""Database leases: at most one holder at a time for a named singleton."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Lease
from app.timeutil import utcnow


def acquire(session: Session, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew lease ``name`` for ``holder``; False while someone else holds it.

    Holders compare expiry with their own clocks, so clocks must agree to well within
    the ttl (NTP does).
    """
    now = utcnow()
    renewed = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    if renewed.rowcount:  # type: ignore[attr-defined]
        return True
    try:
        with session.begin_nested():
            session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
    except IntegrityError:
        return False
    return True


def release(session: Session, name: str, holder: str) -> None:
    """Give lease ``name`` up, if ``holder`` has it."""
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
