"""What the upload endpoints share: reading the multipart form and fetching owned rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import request
from flask_smorest import abort
from werkzeug.datastructures import FileStorage

from app import db
from app.workloads.uploads import TooLarge

Row = TypeVar("Row")


def multipart_body(required: list[str], fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI request body of an upload: a binary ``file`` plus ``fields``."""
    properties = {"file": {"type": "string", "format": "binary"}, **fields}
    schema = {"type": "object", "required": ["file", *required], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def read_form(
    fields: dict[str, Callable[[str], str | None]],
) -> tuple[FileStorage, dict[str, str]]:
    """The uploaded ``file`` and the form fields, each checked by its function (which
    returns what is wrong, or None); 422 naming every bad field."""
    upload = request.files.get("file")
    errors: dict[str, list[str]] = {}
    if upload is None or not upload.filename:
        errors["file"] = ["attach the file as the multipart field 'file'"]
    values = {name: request.form.get(name, "") for name in fields}
    for name, check in fields.items():
        problem = check(values[name])
        if problem:
            errors[name] = [problem]
    if errors:
        abort(422, errors={"form": errors})
    assert upload is not None
    return upload, values


def store_or_413(create: Callable[[], Row]) -> Row:
    """Run ``create``; a file over the upload limit becomes a 413."""
    try:
        return create()
    except TooLarge as error:
        abort(413, message=str(error))
        raise


def owned(model: type[Row], row_id: str, tenant: str | None, noun: str) -> Row:
    """The row, if the caller's tenant owns it (None: any tenant); else 404."""
    with db.session_scope() as session:
        row: Any = session.get(model, row_id)
    if row is None or (tenant is not None and row.tenant != tenant):
        abort(404, message=f"no {noun} with id {row_id}")
    return row  # type: ignore[no-any-return]
