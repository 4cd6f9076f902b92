"""Liveness, readiness, and the worker endpoints users of other job APIs expect."""

from __future__ import annotations

from typing import Any

import dramatiq
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select, text

from api.auth import authorize, tenant_filter
from api.schemas import HealthSchema, WorkerHealthSchema, WorkerTaskSchema
from app import db
from app.jobs import get_job
from app.models import Job
from app.queues import broker_reachable, queue_stats
from app.states import JobState

blp = Blueprint("health", __name__, description="Health of the API, its database and workers.")

#: Job states as Celery names them, for clients written against a Celery-style API.
TASK_STATUS = {
    JobState.SCHEDULED: "PENDING",
    JobState.QUEUED: "PENDING",
    JobState.RUNNING: "STARTED",
    JobState.RETRYING: "RETRY",
    JobState.SUCCEEDED: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
}


def _database_error() -> str | None:
    try:
        with db.session_scope() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


@blp.route("/healthz")
class Healthz(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self) -> Any:
        """The API process is alive."""
        return {"status": "ok"}


@blp.route("/readyz")
class Readyz(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, description="The database or the broker is unreachable.")
    def get(self) -> Any:
        """The database and the broker are reachable."""
        problems = {
            name: error
            for name, error in (
                ("database", _database_error()),
                ("broker", broker_reachable(dramatiq.get_broker())),
            )
            if error
        }
        if problems:
            abort(503, message=f"unavailable: {', '.join(sorted(problems))}", errors=problems)
        return {"status": "ok", "database": "ok", "broker": "ok"}


@blp.route("/v1/worker/health")
class WorkerHealth(MethodView):
    @blp.response(200, WorkerHealthSchema)
    def get(self) -> Any:
        """Whether workers consume the queues; running and finished job counts."""
        tenant = tenant_filter(authorize("jobs:read"))
        consumers = sum(stats.consumers for stats in queue_stats(dramatiq.get_broker()))
        counts = select(Job.state, func.count()).group_by(Job.state)
        if tenant is not None:
            counts = counts.where(Job.tenant == tenant)
        with db.session_scope() as session:
            by_state: dict[str, int] = {state: n for state, n in session.execute(counts)}
        processed = sum(
            by_state.get(state.value, 0) for state in (JobState.SUCCEEDED, JobState.FAILED)
        )
        return {
            "status": "ok" if consumers else "unavailable",
            "available": consumers > 0,
            "consumers": consumers,
            "active": by_state.get(JobState.RUNNING.value, 0),
            "processed": processed,
        }


@blp.route("/v1/worker/tasks/<string:task_id>")
class WorkerTask(MethodView):
    @blp.response(200, WorkerTaskSchema)
    def get(self, task_id: str) -> Any:
        """A job's status under Celery's names (PENDING, STARTED, SUCCESS, FAILURE, …)."""
        job = get_job(task_id, tenant=tenant_filter(authorize("jobs:read")))
        return {
            "task_id": job.id,
            "status": TASK_STATUS[JobState(job.state)],
            "state": job.state,
            "result": job.result,
            "error": job.error_message,
        }
