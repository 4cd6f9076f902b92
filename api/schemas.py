"""Request and response schemas; request schemas are allow-lists (unknown fields: 422)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import g, has_app_context
from marshmallow import ValidationError, fields, post_dump, validate, validates_schema

from api.limits import LISTED_VALUE_MAX_CHARS, MOMENT_RANGE, check_moment
from app.defaults import MAX_PRIORITY
from app.models import ADMIN_ONLY_JOB_FIELDS
from app.states import JobState

STATES = [state.value for state in JobState]
#: A delay longer than this is almost certainly a unit mistake (seconds for ms, …).
MAX_DELAY_MS = 366 * 24 * 3600 * 1000


def moment() -> fields.AwareDateTime:
    """A request's datetime: with its offset, within the range the database can take."""
    return fields.AwareDateTime(
        validate=check_moment, metadata={"description": f"ISO 8601 with offset; {MOMENT_RANGE}"}
    )


def caller_is_admin() -> bool:
    """Whether the request being answered was authorised with an admin token."""
    principal = g.get("principal") if has_app_context() else None
    return principal is not None and principal.is_admin


class JobCreateSchema(ma.Schema):
    actor = fields.String(required=True, validate=validate.Length(1, 255))
    kwargs = fields.Dict(keys=fields.String(), load_default=dict)
    queue = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,200}$"))
    priority = fields.Integer(validate=validate.Range(0, MAX_PRIORITY))
    delay_ms = fields.Integer(validate=validate.Range(0, MAX_DELAY_MS))
    run_at = moment()
    max_retries = fields.Integer(validate=validate.Range(0, 100))
    callback_url = fields.Url(schemes={"http", "https"}, validate=validate.Length(max=2000))

    @validates_schema
    def _one_time(self, data: dict[str, Any], **_: Any) -> None:
        if "delay_ms" in data and "run_at" in data:
            raise ValidationError("give delay_ms or run_at, not both", "delay_ms")


class JobBatchSchema(ma.Schema):
    jobs = fields.List(
        fields.Nested(JobCreateSchema), required=True, validate=validate.Length(1, 1000)
    )


class JobSchema(ma.Schema):
    id = fields.String()
    actor = fields.String()
    queue = fields.String()
    args = fields.List(fields.Raw())
    kwargs = fields.Dict(keys=fields.String())
    state = fields.String(metadata={"enum": STATES})
    priority = fields.Integer()
    attempts = fields.Integer()
    max_retries = fields.Integer(allow_none=True)
    progress = fields.Integer()
    progress_message = fields.String(allow_none=True)
    result = fields.Raw(allow_none=True)
    error_type = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    error_traceback = fields.String(allow_none=True, metadata={"description": "Admins only."})
    idempotency_key = fields.String(allow_none=True)
    correlation_id = fields.String(allow_none=True)
    callback_url = fields.String(allow_none=True)
    tenant = fields.String()
    worker_id = fields.String(
        allow_none=True, metadata={"description": "The worker's hostname:pid; admins only."}
    )
    created_at = fields.DateTime()
    run_at = fields.DateTime(allow_none=True)
    published_at = fields.DateTime(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime()

    @post_dump
    def _hide_from_tenants(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Here rather than in the views, so that no view (or nested use, as a schedule's
        # last job) can show them by forgetting to remove them.
        if not caller_is_admin():
            truncated = data.get("truncated", {})
            for name in ADMIN_ONLY_JOB_FIELDS:
                data.pop(name, None)
                truncated.pop(name, None)  # A listing must not tell it exists either.
            if "truncated" in data and not truncated:
                del data["truncated"]
        return data


class JobListItemSchema(JobSchema):
    """A job in a listing: values too long to list are left out (``truncated``)."""

    truncated = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={
            "description": (
                f"Fields left out for being longer than {LISTED_VALUE_MAX_CHARS} characters"
                " (args, kwargs, result: of their JSON), with their length;"
                " GET /v1/jobs/{id} has them."
            )
        },
    )


class JobIdsSchema(ma.Schema):
    ids = fields.List(fields.String())


class JobListQuerySchema(ma.Schema):
    state = fields.String(validate=validate.OneOf(STATES))
    actor = fields.String(validate=validate.Length(1, 255))
    queue = fields.String(validate=validate.Length(1, 255))
    created_after = moment()
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))
    cursor = fields.String(validate=validate.Length(1, 500))


class JobPageSchema(ma.Schema):
    items = fields.List(fields.Nested(JobListItemSchema))
    next_cursor = fields.String(allow_none=True)


class ActorSchema(ma.Schema):
    name = fields.String()
    queue = fields.String()
    max_retries = fields.Integer()
    min_backoff_ms = fields.Integer()
    max_backoff_ms = fields.Integer()
    time_limit_ms = fields.Integer()
    kwargs_schema = fields.Dict()


class ScheduleSchema(ma.Schema):
    actor = fields.String()
    cron = fields.String()
    next_run_at = fields.DateTime()
    last_job = fields.Nested(JobSchema, allow_none=True)


class QueueSchema(ma.Schema):
    name = fields.String()
    ready = fields.Integer()
    delayed = fields.Integer()
    dead_letter = fields.Integer()
    consumers = fields.Integer()


class HealthSchema(ma.Schema):
    status = fields.String()
    database = fields.String()
    broker = fields.String()


class WorkerHealthSchema(ma.Schema):
    status = fields.String()
    available = fields.Boolean()
    workers = fields.Integer(metadata={"description": "Admins only."})
    active = fields.Integer(metadata={"description": "Admins only."})
    processed = fields.Integer(metadata={"description": "Admins only."})


class WorkerSchema(ma.Schema):
    id = fields.String()
    hostname = fields.String()
    pid = fields.Integer()
    queues = fields.List(fields.String())
    started_at = fields.DateTime()
    last_seen = fields.DateTime()
    stopped_at = fields.DateTime(allow_none=True)
    running_job_ids = fields.List(fields.String())
    processed = fields.Integer()
    failed = fields.Integer()
    status = fields.String(metadata={"enum": ["alive", "stopped", "gone"]})


class WorkerTaskSchema(ma.Schema):
    task_id = fields.String()
    status = fields.String()
    state = fields.String()
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)


class DeadLetterQuerySchema(ma.Schema):
    actor = fields.String(validate=validate.Length(1, 255))
    queue = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,200}$"))
    error_type = fields.String(validate=validate.Length(1, 255))
    failed_after = moment()
    failed_before = moment()
    limit = fields.Integer(load_default=1000, validate=validate.Range(1, 10_000))


class RedriveSchema(DeadLetterQuerySchema):
    dry_run = fields.Boolean(load_default=False)


class DeadLetterSchema(ma.Schema):
    job_id = fields.String()
    actor = fields.String()
    queue = fields.String()
    job_state = fields.String(allow_none=True)
    error_type = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    failed_at = fields.DateTime(allow_none=True)


class RedriveResultSchema(ma.Schema):
    dry_run = fields.Boolean()
    count = fields.Integer()
    items = fields.List(fields.Nested(DeadLetterSchema))


class RunSchema(ma.Schema):
    id = fields.String()
    kind = fields.String()
    label = fields.String(allow_none=True)
    file_name = fields.String()
    sha256 = fields.String()
    size_bytes = fields.Integer()
    status = fields.String(
        metadata={"enum": ["pending", "stored", "parsing", "complete", "failed"]}
    )
    job_id = fields.String(allow_none=True)
    files_total = fields.Integer()
    files_parsed = fields.Integer()
    stanza_count = fields.Integer()
    error = fields.String(allow_none=True)
    tenant = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class RunListQuerySchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class StanzaSchema(ma.Schema):
    id = fields.Integer()
    app = fields.String()
    path = fields.String()
    conf = fields.String()
    stanza = fields.String()
    settings = fields.Dict(keys=fields.String(), values=fields.String())
    line = fields.Integer()


class StanzaQuerySchema(ma.Schema):
    conf = fields.String(validate=validate.Length(1, 255))
    stanza = fields.String(validate=validate.Length(1, 1000))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = fields.String(validate=validate.Length(1, 100))


class StanzaPageSchema(ma.Schema):
    items = fields.List(fields.Nested(StanzaSchema))
    next_cursor = fields.String(allow_none=True)


class DatasetSchema(ma.Schema):
    id = fields.String()
    country = fields.String()
    year = fields.Integer(allow_none=True)
    file_name = fields.String()
    sha256 = fields.String()
    size_bytes = fields.Integer()
    status = fields.String(metadata={"enum": ["pending", "processing", "completed", "failed"]})
    job_id = fields.String(allow_none=True)
    rows = fields.Integer()
    seconds = fields.Float(allow_none=True)
    rows_per_second = fields.Float(allow_none=True)
    error = fields.String(allow_none=True)
    tenant = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class NameSchema(ma.Schema):
    name = fields.String()
    sex = fields.String()
    count = fields.Integer()
    year = fields.Integer()
    country = fields.String()
    dataset_id = fields.String()


class NameQuerySchema(ma.Schema):
    name = fields.String(validate=validate.Length(1, 100))
    year = fields.Integer(validate=validate.Range(1800, 3000))
    sex = fields.String(validate=validate.OneOf(["F", "M"]))
    country = fields.String(validate=validate.Length(2, 8))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = fields.String(validate=validate.Length(1, 100))


class NamePageSchema(ma.Schema):
    items = fields.List(fields.Nested(NameSchema))
    next_cursor = fields.String(allow_none=True)


class HealthCheckSchema(ma.Schema):
    at = fields.DateTime()
    ok = fields.Boolean()
    api_ok = fields.Boolean()
    api_detail = fields.String(allow_none=True)
    database_ok = fields.Boolean()
    database_detail = fields.String(allow_none=True)
    broker_ok = fields.Boolean()
    broker_detail = fields.String(allow_none=True)


class HealthHistoryQuerySchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 1000))
