"""/v1/uploads and /v1/runs: configuration archives and the stanzas parsed from them."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from api.auth import authorize, tenant_filter
from api.pagination import decode_id_cursor, encode_id_cursor
from api.schemas import RunListQuerySchema, RunSchema, StanzaPageSchema, StanzaQuerySchema
from api.uploads import multipart_body, owned, read_form, store_or_413
from app import db
from app.models import ConfStanza, IngestionRun
from app.workloads.ingest.runs import KINDS, create_run

blp = Blueprint("ingest", __name__, url_prefix="/v1", description="Configuration archives.")

UPLOAD_FORM = multipart_body(
    ["type"],
    {
        "type": {"type": "string", "enum": list(KINDS)},
        "label": {"type": "string", "maxLength": 255},
    },
)


def _label_problem(value: str) -> str | None:
    return "at most 255 characters" if len(value) > 255 else None


@blp.route("/uploads")
class Uploads(MethodView):
    @blp.doc(requestBody=UPLOAD_FORM)
    @blp.response(202, RunSchema, description="Stored; parsing is queued.")
    def post(self) -> Any:
        """Upload a .tar, .tar.gz/.tgz or .zip of Splunk configuration to be parsed."""
        principal = authorize("jobs:write")
        upload, form = read_form(
            {
                "type": lambda value: (
                    None if value in KINDS else f"must be one of {', '.join(KINDS)}"
                ),
                "label": _label_problem,
            }
        )
        run = store_or_413(
            lambda: create_run(
                upload.stream,
                file_name=(upload.filename or "")[-255:],
                kind=form["type"],
                label=form["label"] or None,
                tenant=principal.tenant,
            )
        )
        return run, {"Location": url_for("ingest.Run", run_id=run.id)}


@blp.route("/runs")
class Runs(MethodView):
    @blp.arguments(RunListQuerySchema(), location="query")
    @blp.response(200, RunSchema(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """The newest ingestion runs."""
        tenant = tenant_filter(authorize("jobs:read"))
        statement = (
            select(IngestionRun).order_by(IngestionRun.created_at.desc()).limit(query["limit"])
        )
        if tenant is not None:
            statement = statement.where(IngestionRun.tenant == tenant)
        with db.session_scope() as session:
            return list(session.scalars(statement))


@blp.route("/runs/<string:run_id>")
class Run(MethodView):
    @blp.response(200, RunSchema)
    def get(self, run_id: str) -> Any:
        """A run: status, file and stanza counts, its job, its error."""
        return owned(IngestionRun, run_id, tenant_filter(authorize("jobs:read")), "run")


@blp.route("/runs/<string:run_id>/stanzas")
class RunStanzas(MethodView):
    @blp.arguments(StanzaQuerySchema(), location="query")
    @blp.response(200, StanzaPageSchema)
    def get(self, query: dict[str, Any], run_id: str) -> Any:
        """The run's stanzas in file order; filter by ``conf`` and ``stanza``."""
        owned(IngestionRun, run_id, tenant_filter(authorize("jobs:read")), "run")
        statement = select(ConfStanza).where(ConfStanza.run_id == run_id).order_by(ConfStanza.id)
        if "conf" in query:
            statement = statement.where(ConfStanza.conf == query["conf"])
        if "stanza" in query:
            statement = statement.where(ConfStanza.stanza == query["stanza"])
        if "cursor" in query:
            statement = statement.where(
                ConfStanza.id > decode_id_cursor(query["cursor"], ConfStanza.id)
            )
        limit = query["limit"]
        with db.session_scope() as session:
            rows = list(session.scalars(statement.limit(limit + 1)))
        items = rows[:limit]
        more = len(rows) > limit
        return {"items": items, "next_cursor": encode_id_cursor(items[-1].id) if more else None}
