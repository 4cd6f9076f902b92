"""The Flask application factory. The REST API (v1) is built on it in a later release."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from sqlalchemy import text

from app import db


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the API application; ``config`` overrides Flask settings (for tests)."""
    flask_app = Flask(__name__)
    if config:
        flask_app.config.update(config)

    @flask_app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @flask_app.get("/readyz")
    def readyz() -> Any:
        try:
            with db.session_scope() as session:
                session.execute(text("SELECT 1"))
        except Exception as error:
            return jsonify(status="unavailable", database=str(error)), 503
        return jsonify(status="ok", database="ok")

    return flask_app
