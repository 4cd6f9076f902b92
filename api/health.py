"""Liveness, readiness, and the worker endpoints users of other job APIs expect."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select, text

from api.auth import authorize, tenant_filter
from api.schemas import (
    HealthCheckSchema,
    HealthHistoryQuerySchema,
    HealthSchema,
    WorkerHealthSchema,
    WorkerSchema,
    WorkerTaskSchema,
)
from app import db
from app.config import load_settings
from app.jobs import get_job
from app.models import HealthCheck
from app.operations.queues import broker_reachable
from app.states import JobState
from app.workers import list_workers
from app.workers import status as worker_status

blp = Blueprint("health", __name__, description="Health of the API, its database and workers.")

logger = logging.getLogger(__name__)

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
        for name, error in sorted(problems.items()):
            logger.error("Readiness check: the %s is unreachable: %s", name, error)
        if problems:
            # Anyone may ask, so the answer names the dependency only: the drivers'
            # errors carry hosts, ports and user names, which stay in the log.
            abort(
                503,
                message=f"unavailable: {', '.join(sorted(problems))}",
                errors={name: "unreachable" for name in problems},
            )
        return {"status": "ok", "database": "ok", "broker": "ok"}


@blp.route("/v1/worker/health")
class WorkerHealth(MethodView):
    @blp.response(200, WorkerHealthSchema)
    def get(self) -> Any:
        """Whether a live worker (by its heartbeats) can take jobs; admins also get how
        many workers there are, the jobs running on them and the jobs they finished."""
        principal = authorize("jobs:read")
        gone_after = load_settings().worker_gone_after
        with db.session_scope() as session:
            alive = [w for w in list_workers(session) if worker_status(w, gone_after) == "alive"]
        health: dict[str, Any] = {
            "status": "ok" if alive else "unavailable",
            "available": bool(alive),
        }
        if principal.is_admin:
            # The counts are every tenant's work and the platform's size: not a tenant's.
            health.update(
                workers=len(alive),
                active=sum(len(w.running_job_ids) for w in alive),
                processed=sum(w.processed for w in alive),
            )
        return health


@blp.route("/v1/workers")
class Workers(MethodView):
    @blp.response(200, WorkerSchema(many=True))
    def get(self) -> Any:
        """Every worker process that reported in: queues, running jobs, counts, status."""
        authorize("admin")
        gone_after = load_settings().worker_gone_after
        with db.session_scope() as session:
            return [
                {**vars_of(worker), "status": worker_status(worker, gone_after)}
                for worker in list_workers(session)
            ]


def vars_of(worker: Any) -> dict[str, Any]:
    return {column.key: getattr(worker, column.key) for column in worker.__table__.columns}


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


@blp.route("/v1/health/history")
class HealthHistory(MethodView):
    @blp.arguments(HealthHistoryQuerySchema(), location="query")
    @blp.response(200, HealthCheckSchema(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """The periodic health checks, newest first (admin: their details name servers)."""
        authorize("admin")
        with db.session_scope() as session:
            return list(
                session.scalars(
                    select(HealthCheck).order_by(HealthCheck.at.desc()).limit(query["limit"])
                )
            )
