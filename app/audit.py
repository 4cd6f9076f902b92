"""The audit log: every operator action, who took it, on what, and how many jobs it moved."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from app.models import AuditEntry

#: Longest target kept (a filter's description, a job id): the rest is cut.
TARGET_MAX_CHARS = 1000


def record(
    *,
    token_id: str,
    tenant: str,
    action: str,
    target: str | None,
    job_count: int,
    detail: dict[str, Any] | None = None,
    session: Session | None = None,
) -> None:
    """Write one entry, in ``session``'s transaction when given (so the entry and the
    action commit together), else in its own."""
    entry = AuditEntry(
        token_id=token_id,
        tenant=tenant,
        action=action,
        target=target[:TARGET_MAX_CHARS] if target is not None else None,
        job_count=job_count,
        detail=detail,
    )
    if session is not None:
        session.add(entry)
        return
    with db.session_scope() as own:
        own.add(entry)


def entries(*, tenant: str | None, before: int | None, limit: int) -> list[AuditEntry]:
    """Newest first; ``tenant`` None lists every tenant's; ``before`` an id to page from."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if tenant is not None:
        query = query.where(AuditEntry.tenant == tenant)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    with db.session_scope() as session:
        found = list(session.scalars(query))
        session.expunge_all()
    return found
