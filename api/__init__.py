"""The REST API: ``create_app()`` builds it (``gunicorn "api:create_app()"``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask, request
from flask_smorest import abort

from app.config import load_settings
from app.observability import instrument_api

OPENAPI_CONFIG = {
    "API_TITLE": "jobstack",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    # /docs is api.docs_assets' page (Swagger UI from the pinned swagger-ui-bundle package).
    "OPENAPI_SWAGGER_UI_PATH": None,
    "API_SPEC_OPTIONS": {
        "security": [{"bearerAuth": []}],
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    },
}


#: The blueprint of the operator dashboard (HTML pages and form posts, not JSON).
DASHBOARD = "dashboard"
#: Endpoints that take multipart file uploads instead of JSON.
UPLOAD_ENDPOINTS = {"ingest.Uploads", "datasets.DatasetUpload"}


def _refuse_nul_characters(pairs: Iterable[tuple[str | None, str | None]], what: str) -> None:
    """400 for a NUL character in a name or value: no column may hold one (PostgreSQL
    refuses them in text), so it could only fail later, as a 500."""
    for name, value in pairs:
        # A malformed part can come without a name.
        if "\x00" in (name or "") or "\x00" in (value or ""):
            abort(400, message=f"{what} {name!r} contains a NUL character")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the API; ``config`` overrides Flask settings (tests)."""
    import actors  # noqa: F401  (the API submits to the actors registered on the broker)
    from api import (
        catalog,
        correlation,
        dashboard,
        datasets,
        dead_letters,
        events,
        health,
        ingest,
        jobs,
    )
    from api.docs_assets import blp as docs_blueprint
    from api.errors import JobstackApi, register_domain_errors
    from api.limits import refuse_unreadable_json

    app = Flask(__name__)
    app.config.update(OPENAPI_CONFIG)
    app.config["MAX_CONTENT_LENGTH"] = load_settings().api_max_body_bytes
    app.config.update(config or {})

    api = JobstackApi(app)
    register_domain_errors(app)
    correlation.init_app(app)

    upload_limit = load_settings().upload_max_bytes

    @app.before_request
    def _json_bodies_only() -> None:
        _refuse_nul_characters(request.args.items(multi=True), "query parameter")
        _refuse_nul_characters((request.view_args or {}).items(), "path parameter")
        if request.endpoint in UPLOAD_ENDPOINTS:
            # Archives are multipart uploads, with their own (larger) size limit.
            request.max_content_length = upload_limit
            if request.mimetype != "multipart/form-data":
                abort(415, message="send the file as multipart/form-data")
            _refuse_nul_characters(request.form.items(multi=True), "form field")
            for name, upload in request.files.items(multi=True):
                _refuse_nul_characters([(name, upload.filename)], "file name of field")
            return
        if request.blueprint == DASHBOARD:
            # The dashboard's forms post form fields (checked by its own views).
            _refuse_nul_characters(request.form.items(multi=True), "form field")
            return
        has_body = bool(request.content_length) or "chunked" in request.headers.get(
            "Transfer-Encoding", ""
        )
        if request.method in {"POST", "PUT", "PATCH"} and has_body and not request.is_json:
            abort(415, message="send the body as JSON with 'Content-Type: application/json'")
        refuse_unreadable_json()

    blueprints = (
        jobs.blp,
        events.blp,
        catalog.blp,
        dead_letters.blp,
        ingest.blp,
        datasets.blp,
        health.blp,
    )
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    app.register_blueprint(docs_blueprint)
    dashboard.init_app(app)
    instrument_api(app, load_settings())
    return app
