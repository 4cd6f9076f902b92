"""The REST API: ``create_app()`` builds it (``gunicorn "api:create_app()"``)."""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from flask_smorest import abort

from app.config import load_settings

OPENAPI_CONFIG = {
    "API_TITLE": "jobstack",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "/docs",
    "OPENAPI_SWAGGER_UI_URL": "https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
    "API_SPEC_OPTIONS": {
        "security": [{"bearerAuth": []}],
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    },
}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the API; ``config`` overrides Flask settings (tests)."""
    import actors  # noqa: F401  (the API submits to the actors registered on the broker)
    from api import catalog, correlation, dead_letters, events, health, jobs
    from api.errors import JobstackApi, register_domain_errors

    app = Flask(__name__)
    app.config.update(OPENAPI_CONFIG)
    app.config["MAX_CONTENT_LENGTH"] = load_settings().api_max_body_bytes
    app.config.update(config or {})

    api = JobstackApi(app)
    register_domain_errors(app)
    correlation.init_app(app)

    @app.before_request
    def _json_bodies_only() -> None:
        has_body = bool(request.content_length) or "chunked" in request.headers.get(
            "Transfer-Encoding", ""
        )
        if request.method in {"POST", "PUT", "PATCH"} and has_body and not request.is_json:
            abort(415, message="send the body as JSON with 'Content-Type: application/json'")

    for blueprint in (jobs.blp, events.blp, catalog.blp, dead_letters.blp, health.blp):
        api.register_blueprint(blueprint)
    return app
