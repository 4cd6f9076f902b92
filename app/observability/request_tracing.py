"""The API request span carries the request's correlation id, and so does the baggage
that travels with the jobs the request submits."""

from __future__ import annotations

from flask import Flask, g

#: Attribute of the request span, and baggage entry, holding the X-Correlation-ID.
CORRELATION_ATTRIBUTE = "jobstack.correlation_id"
CORRELATION_BAGGAGE = "correlation_id"


def tag_requests(app: Flask) -> None:
    """Registered after Flask's instrumentation: its request span is current here."""
    from opentelemetry import baggage, context, trace

    @app.before_request
    def _tag() -> None:
        correlation_id = g.get("correlation_id")
        if not correlation_id:
            return
        trace.get_current_span().set_attribute(CORRELATION_ATTRIBUTE, correlation_id)
        g.baggage_token = context.attach(baggage.set_baggage(CORRELATION_BAGGAGE, correlation_id))

    @app.teardown_request
    def _untag(_error: BaseException | None) -> None:
        # Teardowns run in reverse order: this one before the instrumentation's own.
        token = g.pop("baggage_token", None)
        if token is not None:
            context.detach(token)
