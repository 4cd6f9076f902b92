"""The metrics server of a worker host: one per ``dramatiq`` command, adding up what its
worker processes wrote to the shared folder.

Dramatiq runs it as a fork (:attr:`Middleware.forks`): a process of its own, started once
per command after the worker processes booted, and stopped with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from app.config import Settings, load_settings
from app.observability.metrics_auth import allowed

logger = logging.getLogger(__name__)

#: A WSGI application: environ, start_response → body.
Wsgi = Callable[[dict[str, Any], Any], Iterable[bytes]]


def serve() -> int:
    """Serve ``/metrics`` until Dramatiq stops this process."""
    # A fork starts from the dramatiq command's own process, which read no settings.
    settings = load_settings()
    try:
        server = make_server(
            settings.metrics_host,
            settings.metrics_port,
            metrics_app(settings),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
    except OSError:
        logger.exception(
            "Cannot serve worker metrics on %s:%d (JOBSTACK_METRICS_HOST/PORT).",
            settings.metrics_host,
            settings.metrics_port,
        )
        return 1
    logger.info(
        "Serving worker metrics on http://%s:%d/metrics.",
        settings.metrics_host,
        settings.metrics_port,
    )
    with server:
        server.serve_forever()
    return 0


def metrics_app(settings: Settings) -> Wsgi:
    """``/metrics`` of the values in ``settings.metrics_dir``, behind the optional token."""
    registry = CollectorRegistry()
    # The worker processes create it at boot; a slow one may not have yet.
    Path(settings.metrics_dir).mkdir(parents=True, exist_ok=True)
    MultiProcessCollector(registry, path=settings.metrics_dir)  # type: ignore[no-untyped-call]
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found: the metrics are at /metrics\n"]
        if not allowed(environ.get("HTTP_AUTHORIZATION"), settings.metrics_token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="jobstack"')],
            )
            return [b"send the metrics token: 'Authorization: Bearer <token>'\n"]
        body: Iterable[bytes] = exposition(environ, start_response)
        return body

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scraper does not hold up the others."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on the worker's output."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)
