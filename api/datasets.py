"""/v1/datasets and /v1/names: baby-name dataset files and the records loaded from them."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from api.auth import authorize, tenant_filter
from api.pagination import decode_id_cursor, encode_id_cursor
from api.schemas import DatasetSchema, NamePageSchema, NameQuerySchema
from api.uploads import multipart_body, owned, read_form, store_or_413
from app import db
from app.models import Dataset, NameRecord
from app.workloads.datasets.loading import create_dataset, queue_reprocess
from app.workloads.datasets.parsers import PARSERS

blp = Blueprint("datasets", __name__, url_prefix="/v1", description="Baby-name datasets.")

UPLOAD_FORM = multipart_body(["country"], {"country": {"type": "string", "enum": sorted(PARSERS)}})


@blp.route("/datasets/upload")
class DatasetUpload(MethodView):
    @blp.doc(requestBody=UPLOAD_FORM)
    @blp.response(202, DatasetSchema, description="Stored; loading is queued.")
    def post(self) -> Any:
        """Upload a dataset file (e.g. ``yob2023.txt`` for ``US``) to be loaded."""
        principal = authorize("jobs:write")
        known = ", ".join(sorted(PARSERS))
        upload, form = read_form(
            {"country": lambda value: None if value in PARSERS else f"must be one of {known}"}
        )
        dataset = store_or_413(
            lambda: create_dataset(
                upload.stream,
                file_name=(upload.filename or "")[-255:],
                country=form["country"],
                tenant=principal.tenant,
            )
        )
        return dataset, {"Location": url_for("datasets.DatasetView", dataset_id=dataset.id)}


@blp.route("/datasets/<string:dataset_id>")
class DatasetView(MethodView):
    @blp.response(200, DatasetSchema)
    def get(self, dataset_id: str) -> Any:
        """A dataset: status, year, rows loaded, seconds, rows per second, error."""
        return owned(Dataset, dataset_id, tenant_filter(authorize("jobs:read")), "dataset")


@blp.route("/datasets/<string:dataset_id>/reprocess")
class DatasetReprocess(MethodView):
    @blp.response(202, DatasetSchema)
    def post(self, dataset_id: str) -> Any:
        """Load the dataset again; its records are replaced atomically."""
        principal = authorize("jobs:write")
        dataset = owned(Dataset, dataset_id, tenant_filter(principal), "dataset")
        return queue_reprocess(dataset.id, dataset.tenant)


@blp.route("/names")
class Names(MethodView):
    @blp.arguments(NameQuerySchema(), location="query")
    @blp.response(200, NamePageSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """Name records, filtered by name, year, sex and country."""
        tenant = tenant_filter(authorize("jobs:read"))
        statement = select(NameRecord).order_by(NameRecord.id)
        if tenant is not None:
            statement = statement.join(Dataset, Dataset.id == NameRecord.dataset_id).where(
                Dataset.tenant == tenant
            )
        for column in ("name", "year", "sex", "country"):
            if column in query:
                statement = statement.where(getattr(NameRecord, column) == query[column])
        if "cursor" in query:
            statement = statement.where(
                NameRecord.id > decode_id_cursor(query["cursor"], NameRecord.id)
            )
        limit = query["limit"]
        with db.session_scope() as session:
            rows = list(session.scalars(statement.limit(limit + 1)))
        items = rows[:limit]
        return {
            "items": items,
            "next_cursor": encode_id_cursor(items[-1].id) if len(rows) > limit else None,
        }
