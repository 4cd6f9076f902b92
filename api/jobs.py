"""/v1/jobs: submit (one or a batch), read, list, cancel, retry."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import dramatiq
from flask import request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema
from sqlalchemy import Select, Text, and_, case, cast, func, null, or_, select, type_coerce
from sqlalchemy.orm import defer

from api.auth import authorize, tenant_filter
from api.correlation import correlation_id
from api.limits import LISTED_VALUE_MAX_CHARS
from api.pagination import decode_cursor, encode_cursor
from api.quotas import check_priority, check_tenant_quota
from api.schemas import (
    JobBatchSchema,
    JobCreateSchema,
    JobIdsSchema,
    JobListQuerySchema,
    JobPageSchema,
    JobSchema,
)
from app import db
from app.config import load_settings
from app.errors import UnknownActor
from app.jobs import SubmitBatch, find_by_idempotency_key, get_job, submit
from app.models import Job
from app.operations import control
from app.tokens import Principal
from app.webhooks import WebhookRefused, check_url

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Submit and follow jobs.")

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Printable ASCII only: a control character (NUL above all) cannot be stored in the key's
#: column on PostgreSQL.
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")

#: Columns whose values can be large (1 MiB of kwargs, a worker's result): listings read
#: them from the database only when short, so neither memory nor the response grows with
#: them.
LARGE_COLUMNS = (
    Job.args,
    Job.kwargs,
    Job.result,
    Job.progress_message,
    Job.error_message,
    Job.error_traceback,
)


def public_actor(name: str) -> dramatiq.Actor[Any, Any]:
    """The public actor called ``name``; 422 when there is none."""
    try:
        actor = dramatiq.get_broker().get_actor(name)
    except dramatiq.errors.ActorNotFound:
        actor = None
    if actor is None or not actor.options.get("public"):
        abort(422, errors={"json": {"actor": [f"no public actor named {name!r}"]}})
    assert actor is not None
    return actor


def kwargs_errors(actor: dramatiq.Actor[Any, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """What is wrong with ``kwargs`` by the actor's ``schema`` option (nothing without one)."""
    schema_class: type[Schema] | None = actor.options.get("schema")
    return _kwargs_schema(schema_class).validate(kwargs) if schema_class is not None else {}


@functools.cache
def _kwargs_schema(schema_class: type[Schema]) -> Schema:
    """One instance per actor schema: instantiating one copies all its fields, which cost
    a batch of 1,000 jobs more than validating them; ``validate`` keeps no state in it."""
    return schema_class()


def _fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _submit(
    principal: Principal, data: dict[str, Any], *, priority_cap: int | None = None, **extra: Any
) -> Job:
    actor = public_actor(data["actor"])
    check_priority(principal, data.get("priority"), cap=priority_cap)
    if data.get("callback_url"):
        try:
            check_url(data["callback_url"], resolve=False)
        except WebhookRefused as error:
            abort(422, errors={"json": {"callback_url": [str(error)]}})
    delay = data.get("delay_ms")
    try:
        return submit(
            actor,
            kwargs=data["kwargs"],
            queue=data.get("queue"),
            priority=data.get("priority"),
            delay=timedelta(milliseconds=delay) if delay is not None else None,
            run_at=data.get("run_at"),
            max_retries=data.get("max_retries"),
            tenant=principal.tenant,
            correlation_id=correlation_id(),
            callback_url=data.get("callback_url"),
            **extra,
        )
    except UnknownActor as error:
        abort(422, errors={"json": {"actor": [str(error)]}})
        raise  # unreachable: abort raises


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobCreateSchema())
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": IDEMPOTENCY_HEADER,
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": "^[\\x20-\\x7e]+$",
                },
                "description": "Same key and body: the same job again. Same key, other body: 409.",
            }
        ]
    )
    @blp.response(202, JobSchema, description="Accepted: the job is stored and queued.")
    @blp.alt_response(409, description="Idempotency-Key reused with another request body.")
    def post(self, data: dict[str, Any]) -> Any:
        """Submit a job. Send ``Idempotency-Key`` to make retries of this request safe."""
        principal = authorize("jobs:write")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            abort(400, message=f"{IDEMPOTENCY_HEADER} must be 1-255 printable ASCII characters")
        errors = kwargs_errors(public_actor(data["actor"]), data["kwargs"])
        if errors:
            abort(422, errors={"json": {"kwargs": errors}})
        fingerprint = _fingerprint(request.get_json()) if key else None
        replayed = key is not None and find_by_idempotency_key(principal.tenant, key) is not None
        if not replayed:
            check_tenant_quota(principal.tenant, 1)
        # submit() returns the job already stored under the key, also when a concurrent
        # request stored it first; the fingerprint says whether it is this request's.
        job = _submit(principal, data, idempotency_key=key, request_fingerprint=fingerprint)
        if key is not None and job.request_fingerprint != fingerprint:
            abort(409, message=f"{IDEMPOTENCY_HEADER} {key!r} was used for another request")
        headers = {"Location": url_for("jobs.JobView", job_id=job.id)}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return job, headers

    @blp.arguments(JobListQuerySchema(), location="query")
    @blp.response(200, JobPageSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """List jobs, newest first; follow ``next_cursor`` for the next page."""
        tenant = tenant_filter(authorize("jobs:read"))
        statement = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
        if tenant is not None:
            statement = statement.where(Job.tenant == tenant)
        for column in ("state", "actor", "queue"):
            if column in query:
                statement = statement.where(getattr(Job, column) == query[column])
        if "created_after" in query:
            statement = statement.where(Job.created_at > query["created_after"])
        if "cursor" in query:
            created, job_id = decode_cursor(query["cursor"])
            statement = statement.where(
                or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
            )
        limit = query["limit"]
        with db.session_scope() as session:
            rows = session.execute(_short_values_only(statement).limit(limit + 1)).all()
        more = len(rows) > limit
        items = [_listed(row) for row in rows[:limit]]
        return {"items": items, "next_cursor": encode_cursor(rows[limit - 1][0]) if more else None}


def _short_values_only(statement: Select[Any]) -> Select[Any]:
    """``statement`` with each large column replaced by its length and its value when
    short (NULL otherwise), both computed by the database."""
    lengths = [func.length(cast(column, Text)) for column in LARGE_COLUMNS]
    values = [
        type_coerce(case((length > LISTED_VALUE_MAX_CHARS, null()), else_=column), column.type)
        for column, length in zip(LARGE_COLUMNS, lengths, strict=True)
    ]
    return statement.add_columns(*lengths, *values).options(
        *(defer(column) for column in LARGE_COLUMNS)
    )


def _listed(row: Any) -> dict[str, Any]:
    """A listing item from a row of :func:`_short_values_only`: the job's short values,
    and in ``truncated`` the length of each left out."""
    job, *rest = row
    lengths, values = rest[: len(LARGE_COLUMNS)], rest[len(LARGE_COLUMNS) :]
    large = {column.key for column in LARGE_COLUMNS}
    item = {
        column.key: getattr(job, column.key)
        for column in Job.__table__.columns
        if column.key not in large
    }
    truncated: dict[str, int] = {}
    for column, length, value in zip(LARGE_COLUMNS, lengths, values, strict=True):
        if length is not None and length > LISTED_VALUE_MAX_CHARS:
            truncated[column.key] = length
        else:
            item[column.key] = value
    if truncated:
        item["truncated"] = truncated
    return item


@blp.route("/batch")
class JobBatch(MethodView):
    @blp.arguments(JobBatchSchema())
    @blp.response(202, JobIdsSchema, description="Accepted: every job is stored and queued.")
    def post(self, data: dict[str, Any]) -> Any:
        """Submit up to 1000 jobs in one transaction: all are stored, or none."""
        principal = authorize("jobs:write")
        errors = {
            index: {"kwargs": found}
            for index, item in enumerate(data["jobs"])
            if (found := kwargs_errors(public_actor(item["actor"]), item["kwargs"]))
        }
        if errors:
            abort(422, errors={"json": {"jobs": errors}})
        check_tenant_quota(principal.tenant, len(data["jobs"]))
        # Read once for the batch: the settings come from the environment on each read.
        cap = load_settings().tenant_max_priority
        session = db.new_session()
        try:
            batch = SubmitBatch(session)
            ids = [
                _submit(principal, item, priority_cap=cap, batch=batch).id for item in data["jobs"]
            ]
            batch.write()
            session.commit()
        finally:
            session.close()
        return {"ids": ids}


@blp.route("/<string:job_id>")
class JobView(MethodView):
    @blp.response(200, JobSchema)
    def get(self, job_id: str) -> Any:
        """One job: state, attempts, progress, result or error."""
        return get_job(job_id, tenant=tenant_filter(authorize("jobs:read")))


@blp.route("/<string:job_id>/cancel")
class JobCancel(MethodView):
    @blp.response(200, JobSchema, description="Cancelled.")
    @blp.alt_response(202, schema=JobSchema, description="Running: it stops within seconds.")
    @blp.alt_response(409, description="The job has already finished.")
    def post(self, job_id: str) -> Any:
        """Cancel a job. A running job stops at its next checkpoint, or is interrupted
        after a grace period; it then ends ``cancelled``, without retry or dead letter."""
        tenant = tenant_filter(authorize("jobs:write"))
        job = control.cancel(job_id, tenant=tenant)
        return (job, 202) if job.state == "running" else job


@blp.route("/<string:job_id>/retry")
class JobRetry(MethodView):
    @blp.response(202, JobSchema)
    @blp.alt_response(409, description="The job is not failed or cancelled.")
    def post(self, job_id: str) -> Any:
        """Queue a failed or cancelled job again, as a new attempt."""
        tenant = tenant_filter(authorize("jobs:write"))
        return control.retry(job_id, tenant=tenant)
