"""The API's ``/metrics``: jobs, queues, outbox, workers and schedules, at scrape time
(:mod:`.api_collector` reads them)."""

from __future__ import annotations

from flask import Flask, Response, request
from flask_smorest import abort

from app.config import Settings
from app.observability.metrics_auth import allowed

MISSING_TOKEN = "send the metrics token: 'Authorization: Bearer <token>'"


def register(app: Flask, settings: Settings) -> None:
    """Add ``/metrics`` to ``app`` when metrics are on; when off there is no such route,
    and ``/metrics`` is the API's usual 404."""
    if not settings.metrics_enabled:
        return
    # Imported only now: prometheus_client costs an API without metrics nothing.
    from app.observability.api_collector import exposition

    render = exposition(settings)

    # A plain route, outside the OpenAPI document: it takes no API token (Prometheus has
    # none), only the metrics token when one is set.
    @app.get("/metrics")
    def metrics() -> Response:
        if not allowed(request.headers.get("Authorization"), settings.metrics_token):
            abort(401, message=MISSING_TOKEN)
        body, content_type = render()
        return Response(body, content_type=content_type)
