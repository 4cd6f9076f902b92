"""/v1/dead-letters: what failed for good, and re-driving it (admin)."""

from __future__ import annotations

from typing import Any

import dramatiq
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import authorize
from api.schemas import DeadLetterQuerySchema, RedriveResultSchema, RedriveSchema
from app.operations.dead_letters import DeadLetterFilter, process

blp = Blueprint(
    "dead_letters", __name__, url_prefix="/v1/dead-letters", description="Dead-letter queues."
)


def _filter(data: dict[str, Any]) -> DeadLetterFilter:
    return DeadLetterFilter(
        actor=data.get("actor"),
        queue=data.get("queue"),
        error_type=data.get("error_type"),
        failed_after=data.get("failed_after"),
        failed_before=data.get("failed_before"),
    )


@blp.route("")
class DeadLetters(MethodView):
    @blp.arguments(DeadLetterQuerySchema(), location="query")
    @blp.response(200, RedriveResultSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """The dead letters matching the filter, with their jobs' errors."""
        authorize("admin")
        found = process(dramatiq.get_broker(), _filter(query), redrive=False, limit=query["limit"])
        return {"dry_run": True, "count": len(found), "items": [f.as_dict() for f in found]}


@blp.route("/redrive")
class Redrive(MethodView):
    @blp.arguments(RedriveSchema())
    @blp.response(200, RedriveResultSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Queue the matching dead letters' jobs again (``dry_run``: only list them)."""
        authorize("admin")
        found = process(
            dramatiq.get_broker(), _filter(data), redrive=not data["dry_run"], limit=data["limit"]
        )
        return {
            "dry_run": data["dry_run"],
            "count": len(found),
            "items": [f.as_dict() for f in found],
        }
