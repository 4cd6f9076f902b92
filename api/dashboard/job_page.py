"""A job's page: its fields, each attempt's error, its timeline, what may be done to it,
and links to its trace and error reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from api.dashboard.reading import reading
from api.dashboard.session import Operator
from app.config import Settings
from app.jobs import get_job
from app.models import ADMIN_ONLY_JOB_FIELDS, Job, JobEvent
from app.operations.control import CANCELLABLE, RETRYABLE
from app.states import JobState

#: Events shown on the timeline: the newest ones (a job reporting progress often has many).
TIMELINE_EVENTS = 200


@dataclass(frozen=True)
class AttemptError:
    attempt: int | None
    error_type: str | None
    message: str | None
    traceback: str | None


def _trace_id(job: Job) -> str | None:
    """The trace id of ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    parent = (job.trace_context or {}).get("traceparent", "")
    parts = parent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _link(template: str, job: Job, trace_id: str | None) -> str | None:
    if not template or ("{trace_id}" in template and trace_id is None):
        return None
    return template.replace("{trace_id}", trace_id or "").replace("{job_id}", job.id)


def _fold_progress(events: list[JobEvent]) -> tuple[list[JobEvent], int]:
    """The timeline with only the newest progress report of each run of them (a job
    reporting every second would bury its state changes), and how many were left out."""
    kept: list[JobEvent] = []
    folded = 0
    for event in events:
        if event.kind == "progress" and kept and kept[-1].kind == "progress":
            kept[-1] = event
            folded += 1
        else:
            kept.append(event)
    return kept, folded


def job_details(job_id: str, operator: Operator, settings: Settings) -> dict[str, Any]:
    with reading() as session:
        job = get_job(job_id, tenant=operator.tenant, session=session)
        events = list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job.id)
                .order_by(JobEvent.seq.desc())
                .limit(TIMELINE_EVENTS)
            )
        )
        session.expunge_all()
    events.reverse()
    errors = [
        AttemptError(
            event.attempt,
            (event.data or {}).get("error_type"),
            (event.data or {}).get("error_message"),
            (event.data or {}).get("error_traceback"),
        )
        for event in events
        if event.to_state == JobState.RETRYING.value and event.data
    ]
    if job.error_type and job.state != JobState.RETRYING.value:
        errors.append(
            AttemptError(job.attempts, job.error_type, job.error_message, job.error_traceback)
        )
    if not operator.is_admin:
        # Tracebacks show server paths and versions: admins only, as in the REST API.
        errors = [AttemptError(e.attempt, e.error_type, e.message, None) for e in errors]
    trace_id = _trace_id(job)
    state = JobState(job.state)
    timeline, folded = _fold_progress(events)
    return {
        "job": job,
        "events": timeline,
        "folded_progress": folded,
        "errors": errors,
        "hidden_fields": () if operator.is_admin else ADMIN_ONLY_JOB_FIELDS,
        "can_cancel": operator.can_act and (state in CANCELLABLE or state == JobState.RUNNING),
        "can_retry": operator.can_act and state in RETRYABLE,
        "trace_url": _link(settings.trace_url_template, job, trace_id),
        "sentry_url": _link(settings.sentry_url_template, job, trace_id),
        "trace_id": trace_id,
    }
