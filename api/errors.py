"""One error shape for every failure: ``{code, status, message, errors}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_smorest import Api
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from app.errors import InvalidTransition, NotFound, SubmitError

logger = logging.getLogger(__name__)


def error_body(code: int, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "status": HTTP_STATUS_CODES.get(code, "Unknown"),
        "message": message,
        "errors": errors or {},
    }


class JobstackApi(Api):  # type: ignore[misc]
    """flask-smorest's Api whose error payloads always carry all four fields."""

    def handle_http_exception(self, error: HTTPException) -> Any:
        code = error.code or 500
        data = getattr(error, "data", None) or {}
        errors = data.get("errors") or data.get("messages") or {}
        message = data.get("message") or error.description or error.name
        if code == 422 and "message" not in data:
            message = "The request was well-formed but has invalid fields."
        headers = data.get("headers") or {}
        if code == 401:
            headers = {**headers, "WWW-Authenticate": 'Bearer realm="jobstack"'}
        return error_body(code, message, errors), code, headers


def register_domain_errors(app: Flask) -> None:
    """Map core errors that reach a view to their HTTP status."""

    @app.errorhandler(NotFound)
    def _not_found(error: NotFound) -> Any:
        return error_body(404, str(error)), 404

    @app.errorhandler(InvalidTransition)
    def _conflict(error: InvalidTransition) -> Any:
        return error_body(409, f"the job is {error.from_state}: {error}"), 409

    @app.errorhandler(SubmitError)
    def _unprocessable(error: SubmitError) -> Any:
        return error_body(422, str(error)), 422

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_down(error: Exception) -> Any:
        logger.error("Database unavailable: %s", error)
        return error_body(503, "the job database is unavailable; try again shortly"), 503

    @app.errorhandler(InternalServerError)
    def _internal(error: InternalServerError) -> Any:
        return error_body(500, "internal error; it has been logged"), 500
