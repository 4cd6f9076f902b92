"""The Jobs page's filter: what an operator may narrow the list by, read from the query
string, turned into SQL the indexes answer, and paged by keyset.

A filter also drives the bulk actions: they act on every job it matches, not only the
page shown, and only after the count is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from app.models import DEFAULT_TENANT, ApiToken, Job
from app.states import JobState

STATES = tuple(state.value for state in JobState)
#: Longest value a filter field takes (a job id, a correlation id, an idempotency key).
FIELD_MAX_CHARS = 255
PAGE_SIZE = 50


class FilterError(ValueError):
    """A filter field that cannot be used, and why."""


@dataclass(frozen=True)
class JobFilter:
    state: str = ""
    actor: str = ""
    queue: str = ""
    tenant: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: str = ""

    @classmethod
    def from_args(cls, args: MultiDict[str, str], *, admin: bool) -> JobFilter:
        """The filter of a query string; FilterError names the first bad field. Only
        admins filter by tenant (everyone else sees their own tenant only)."""
        values: dict[str, Any] = {}
        for name in ("state", "actor", "queue", "tenant", "search"):
            value = args.get(name, "").strip()
            if len(value) > FIELD_MAX_CHARS or any(ord(c) < 32 for c in value):
                raise FilterError(f"{name}: at most {FIELD_MAX_CHARS} printable characters")
            values[name] = value
        if values["tenant"] and not admin:
            raise FilterError("tenant: only admins filter by tenant")
        if values["state"] and values["state"] not in STATES:
            raise FilterError(f"state: one of {', '.join(STATES)}")
        for name in ("created_after", "created_before"):
            raw = args.get(name, "").strip()
            if raw:
                try:
                    moment = datetime.fromisoformat(raw)
                except ValueError:
                    raise FilterError(f"{name}: a date and time like 2026-12-01T09:30") from None
                # The form's datetime-local fields carry no zone: they are UTC, as shown.
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                if not 1970 <= moment.astimezone(UTC).year <= 9998:
                    raise FilterError(f"{name}: a year between 1970 and 9998")
                values[name] = moment
        return cls(**values)

    def as_args(self) -> dict[str, str]:
        """The filter as query-string values (empty fields left out)."""
        found = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, datetime):
                # To the microsecond: a confirmed bulk action must match what was counted.
                value = value.astimezone(UTC).replace(tzinfo=None).isoformat()
            if value:
                found[item.name] = value
        return found

    def describe(self) -> str:
        """In words, for confirmations and the audit log."""
        args = self.as_args()
        return ", ".join(f"{k}={v}" for k, v in args.items()) or "every job"

    def apply(self, query: Any, session: Session, *, tenant: str | None) -> Any:
        """``query`` narrowed by the filter; ``tenant`` (non-admins) always applies."""
        if tenant is not None:
            query = query.where(Job.tenant == tenant)
        elif self.tenant:
            query = query.where(Job.tenant == self.tenant)
        for name in ("state", "actor", "queue"):
            if value := getattr(self, name):
                query = query.where(getattr(Job, name) == value)
        if self.created_after is not None:
            query = query.where(Job.created_at >= self.created_after)
        if self.created_before is not None:
            query = query.where(Job.created_at < self.created_before)
        if self.search:
            query = query.where(self._search(session, tenant))
        return query

    def _search(self, session: Session, tenant: str | None) -> Any:
        """A job id, a correlation id or an idempotency key. Keys are unique per tenant
        and indexed so: across tenants (admins) the known tenants are named, which lets
        the index answer instead of a scan."""
        if tenant is not None:
            tenants = [tenant]
        elif self.tenant:
            tenants = [self.tenant]
        else:
            tenants = sorted({DEFAULT_TENANT, *session.scalars(select(ApiToken.tenant).distinct())})
        return or_(
            Job.id == self.search,
            Job.correlation_id == self.search,
            and_(Job.tenant.in_(tenants), Job.idempotency_key == self.search),
        )


def newest_first(query: Select[Any], cursor: tuple[datetime, str] | None) -> Select[Any]:
    query = query.order_by(Job.created_at.desc(), Job.id.desc())
    if cursor is not None:
        created, job_id = cursor
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    return query


#: The columns the list shows: never the large ones (arguments, results, tracebacks).
LISTED_COLUMNS = (
    Job.id,
    Job.actor,
    Job.state,
    Job.attempts,
    Job.queue,
    Job.tenant,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.progress,
    Job.error_type,
)


def page(
    session: Session,
    wanted: JobFilter,
    *,
    tenant: str | None,
    cursor: tuple[datetime, str] | None,
    size: int = PAGE_SIZE,
) -> tuple[list[Any], tuple[datetime, str] | None]:
    """One page of rows, newest first, and the cursor of the next page (None at the end)."""
    query = newest_first(wanted.apply(select(*LISTED_COLUMNS), session, tenant=tenant), cursor)
    rows = session.execute(query.limit(size + 1)).all()
    following = (rows[size - 1].created_at, rows[size - 1].id) if len(rows) > size else None
    return list(rows[:size]), following


def count(session: Session, wanted: JobFilter, *, tenant: str | None, at_most: int) -> int:
    """How many jobs match, counting no further than ``at_most`` + 1."""
    matching = wanted.apply(select(Job.id), session, tenant=tenant).limit(at_most + 1)
    return int(session.scalar(select(func.count()).select_from(matching.subquery())) or 0)


def matching_ids(
    session: Session,
    wanted: JobFilter,
    *,
    tenant: str | None,
    state_in: tuple[str, ...],
    limit: int,
) -> list[str]:
    """Ids of the matching jobs in ``state_in`` (the states an action applies to)."""
    query = wanted.apply(select(Job.id), session, tenant=tenant).where(Job.state.in_(state_in))
    return list(session.scalars(query.limit(limit)))
