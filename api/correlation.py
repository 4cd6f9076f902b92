"""X-Correlation-ID: read from the request (or made up), returned, and given to jobs."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from app.logs import bind_request_correlation

HEADER = "X-Correlation-ID"
VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def correlation_id() -> str:
    """The current request's correlation id."""
    value: str = g.correlation_id
    return value


def init_app(app: Flask) -> None:
    @app.before_request
    def _read() -> None:
        given = request.headers.get(HEADER, "")
        # An unusable id (too long, odd characters) is replaced, not rejected: it is a
        # tracing aid, and a request should not fail over it.
        g.correlation_id = given if VALID.match(given) else uuid.uuid4().hex
        bind_request_correlation(g.correlation_id)

    @app.after_request
    def _write(response: Response) -> Response:
        if "correlation_id" in g:
            response.headers[HEADER] = g.correlation_id
        return response

    @app.teardown_request
    def _forget(_error: BaseException | None) -> None:
        bind_request_correlation(None)
