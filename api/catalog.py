"""/v1/actors and /v1/queues: what can be submitted, and where work is waiting."""

from __future__ import annotations

from typing import Any

import dramatiq
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import authorize, tenant_filter
from api.schemas import ActorSchema, QueueSchema, ScheduleSchema
from app.config import load_settings
from app.cron import schedules
from app.defaults import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_MIN_BACKOFF_MS,
    DEFAULT_TIME_LIMIT_MS,
    MAX_BACKOFF_CAP_MS,
)
from app.operations.queues import queue_stats

blp = Blueprint("catalog", __name__, url_prefix="/v1", description="Actors, schedules and queues.")


def _json_schema(schema_class: type | None) -> dict[str, Any]:
    if schema_class is None:
        return {"type": "object"}
    plugin = MarshmallowPlugin()
    APISpec("actors", "1", "3.0.3", plugins=[plugin])
    converted: dict[str, Any] = plugin.converter.schema2jsonschema(schema_class())
    return converted


def describe(actor: dramatiq.Actor[Any, Any]) -> dict[str, Any]:
    options = actor.options
    return {
        "name": actor.actor_name,
        "queue": actor.queue_name,
        "max_retries": options.get("max_retries", DEFAULT_MAX_RETRIES),
        "min_backoff_ms": options.get("min_backoff", DEFAULT_MIN_BACKOFF_MS),
        "max_backoff_ms": min(options.get("max_backoff", MAX_BACKOFF_CAP_MS), MAX_BACKOFF_CAP_MS),
        "time_limit_ms": int(
            min(
                options.get("time_limit", DEFAULT_TIME_LIMIT_MS),
                load_settings().max_time_limit * 1000,
            )
        ),
        "kwargs_schema": _json_schema(options.get("schema")),
    }


@blp.route("/actors")
class Actors(MethodView):
    @blp.response(200, ActorSchema(many=True))
    def get(self) -> Any:
        """The actors this API may submit, with their argument schemas and retry policy."""
        authorize("jobs:read")
        broker = dramatiq.get_broker()
        actors = [broker.get_actor(name) for name in sorted(broker.get_declared_actors())]
        return [describe(actor) for actor in actors if actor.options.get("public")]


@blp.route("/queues")
class Queues(MethodView):
    @blp.response(200, QueueSchema(many=True))
    def get(self) -> Any:
        """Each queue's ready, delayed and dead-lettered messages and its consumers."""
        authorize("jobs:read")
        return [vars(stats) for stats in queue_stats(dramatiq.get_broker())]


@blp.route("/schedules")
class Schedules(MethodView):
    @blp.response(200, ScheduleSchema(many=True))
    def get(self) -> Any:
        """Each cron schedule (UTC), its next tick and the job of its latest tick."""
        tenant = tenant_filter(authorize("jobs:read"))
        return [vars(found) for found in schedules(dramatiq.get_broker(), tenant=tenant)]
