"""/v1/jobs/{id}/events: a job's history and live changes as Server-Sent Events.

The view decides whether the stream may open (token, tenant, Last-Event-ID, the stream
limits) and hands it to the event loop, which writes it (:mod:`api.serving.handoff`): an
open stream holds no view thread.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from api.auth import authorize, tenant_filter
from api.serving import slots
from api.serving.handoff import STREAM_HEADER, stream_header
from app.config import load_settings
from app.jobs import get_job

blp = Blueprint("events", __name__, url_prefix="/v1/jobs", description="Follow a job live.")

#: An event id: ASCII digits that fit a 64-bit integer.
EVENT_ID = re.compile(r"^[0-9]{1,18}$")


@blp.route("/<string:job_id>/events")
class JobEvents(MethodView):
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": "Last-Event-ID",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "description": "Resume after this event id.",
            }
        ],
        responses={
            "200": {
                "description": "An event stream; ends after the job's final state.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "429": {"description": "The token or its tenant has too many open streams."},
        },
    )
    def get(self, job_id: str) -> Any:
        """Stream the job's events (state changes, progress). ``Last-Event-ID`` resumes."""
        principal = authorize("jobs:read")
        get_job(job_id, tenant=tenant_filter(principal))
        last = request.headers.get("Last-Event-ID", "0").strip() or "0"
        if not EVENT_ID.match(last):
            abort(400, message="Last-Event-ID must be the id of an event this stream sent")
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            # Headers only: no stream, so no slot.
            return Response(b"", mimetype="text/event-stream", headers=headers)
        settings = load_settings()
        try:
            slot = slots.take(
                principal.token_id,
                principal.tenant,
                job_id,
                per_token=settings.streams_per_token,
                per_tenant=settings.streams_per_tenant,
            )
        except slots.TooManyStreams as error:
            abort(429, message=str(error), headers={"Retry-After": "10"})
        handoff = stream_header(
            job_id,
            principal.token_id,
            slot,
            int(last),
            settings.sse_max_seconds,
            admin=principal.is_admin,
        )
        return Response(
            b"",
            mimetype="text/event-stream",
            headers={**headers, STREAM_HEADER: handoff},
        )
