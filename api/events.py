"""/v1/jobs/{id}/events: a job's history and live changes as Server-Sent Events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select

from api.auth import authorize, tenant_filter
from app import db
from app.config import load_settings
from app.jobs import get_job
from app.models import JobEvent
from app.states import TERMINAL_STATES

blp = Blueprint("events", __name__, url_prefix="/v1/jobs", description="Follow a job live.")

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
TERMINAL = {state.value for state in TERMINAL_STATES}


def _new_events(job_id: str, after: int) -> list[JobEvent]:
    with db.session_scope() as session:
        return list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.seq > after)
                .order_by(JobEvent.seq)
            )
        )


def _frame(event: JobEvent) -> str:
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {json.dumps(event.to_dict())}\n\n"


def stream(job_id: str, after: int, max_seconds: float) -> Iterator[str]:
    """Events after seq ``after``, then new ones as they come, until the job has finished."""
    started = last_sent = time.monotonic()
    while True:
        events = _new_events(job_id, after)
        for event in events:
            yield _frame(event)
            after = event.seq
        if events:
            last_sent = time.monotonic()
        elif get_job(job_id).state in TERMINAL:
            return  # Nothing new and finished: every event has been sent.
        now = time.monotonic()
        if now - started > max_seconds:
            return  # The client reconnects with Last-Event-ID.
        if now - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = now
        time.sleep(POLL_SECONDS)


@blp.route("/<string:job_id>/events")
class JobEvents(MethodView):
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": "Last-Event-ID",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                "description": "Resume after this event id.",
            }
        ],
        responses={
            "200": {
                "description": "An event stream; ends after the job's final state.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    )
    def get(self, job_id: str) -> Any:
        """Stream the job's events (state changes, progress). ``Last-Event-ID`` resumes."""
        get_job(job_id, tenant=tenant_filter(authorize("jobs:read")))
        last = request.headers.get("Last-Event-ID", "0").strip() or "0"
        if not last.isdigit():
            abort(400, message="Last-Event-ID must be the id of an event this stream sent")
        return Response(
            stream(job_id, int(last), load_settings().sse_max_seconds),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
