"""Per-tenant limits on submissions, so that one tenant cannot take every worker thread:
jobs not yet finished (JOBSTACK_TENANT_MAX_ACTIVE), jobs submitted per minute
(JOBSTACK_TENANT_SUBMITS_PER_MINUTE), both off (0) by default, and the highest priority a
tenant may ask (JOBSTACK_TENANT_MAX_PRIORITY, 9 by default: every priority).

Counted in the database, so they hold across API processes. Each count stops at the
limit (a bounded scan of the tenant's rows), and two submissions at the same instant may
both pass: a tenant can exceed a limit by the number of API threads, never more.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_smorest import abort
from sqlalchemy import Select, func, select

from app import db
from app.config import load_settings
from app.models import Job
from app.states import TERMINAL_STATES
from app.timeutil import utcnow
from app.tokens import Principal

FINISHED = [state.value for state in TERMINAL_STATES]
WINDOW = timedelta(minutes=1)


def _count_up_to(statement: Select[Any], limit: int) -> int:
    with db.session_scope() as session:
        bounded = statement.limit(limit).subquery()
        return int(session.scalar(select(func.count()).select_from(bounded)) or 0)


def check_tenant_quota(tenant: str, adding: int) -> None:
    """429 if ``adding`` more jobs would take ``tenant`` over one of its limits."""
    settings = load_settings()
    if settings.tenant_max_active > 0:
        unfinished = select(Job.id).where(Job.tenant == tenant, Job.state.not_in(FINISHED))
        active = _count_up_to(unfinished, settings.tenant_max_active)
        if active + adding > settings.tenant_max_active:
            abort(
                429,
                message=(
                    f"tenant {tenant!r} has {active} unfinished jobs and may have at most "
                    f"{settings.tenant_max_active} (JOBSTACK_TENANT_MAX_ACTIVE); "
                    f"{adding} more would go over: wait for some to finish"
                ),
                headers={"Retry-After": "5"},
            )
    if settings.tenant_submits_per_minute > 0:
        recent = select(Job.id).where(Job.tenant == tenant, Job.created_at > utcnow() - WINDOW)
        submitted = _count_up_to(recent, settings.tenant_submits_per_minute)
        if submitted + adding > settings.tenant_submits_per_minute:
            abort(
                429,
                message=(
                    f"tenant {tenant!r} submitted {submitted} jobs in the last minute and may "
                    f"submit {settings.tenant_submits_per_minute} "
                    f"(JOBSTACK_TENANT_SUBMITS_PER_MINUTE); {adding} more would go over"
                ),
                headers={"Retry-After": "60"},
            )


def check_priority(principal: Principal, priority: int | None, cap: int | None = None) -> None:
    """422 for a priority above the tenants' cap (``cap``, or read from the settings);
    admins may use every priority."""
    if cap is None:
        cap = load_settings().tenant_max_priority
    if priority is not None and priority > cap and not principal.is_admin:
        abort(
            422,
            errors={
                "json": {
                    "priority": [
                        f"at most {cap} for tenants (JOBSTACK_TENANT_MAX_PRIORITY); "
                        "higher priorities are kept for operators"
                    ]
                }
            },
        )
