"""Traces (OpenTelemetry), metrics (Prometheus) and error reports (Sentry).

Each is off until configured with its ecosystem's own settings (``OTEL_*``,
``JOBSTACK_METRICS_ENABLED``, ``SENTRY_DSN``) and costs nothing when off: no middleware
is added, no thread started, no port opened.

Modules: :mod:`.tracing` (provider and context helpers), :mod:`.job_tracing` (the
worker's spans), :mod:`.metrics` (worker metrics and their server), :mod:`.api_metrics`
(the API's ``/metrics``), :mod:`.error_reports` (Sentry).
"""

from __future__ import annotations

from dramatiq.middleware import Middleware
from flask import Flask

from app.config import Settings


def tracing_middleware(settings: Settings) -> list[Middleware]:
    """The job tracing middleware when tracing is on, to go right BEFORE Tracking (see
    :mod:`.job_tracing` for why)."""
    from app.observability import tracing

    if not tracing.ENABLED:
        return []  # Not even imported: it imports OpenTelemetry.
    from app.observability import job_tracing

    return job_tracing.worker_middleware(settings)


def worker_middleware(settings: Settings) -> list[Middleware]:
    """The observability middleware that is switched on, in the order they run, to go
    right after Tracking (their ``after_*`` hooks then see Retries' decision)."""
    from app.observability import error_reports, metrics

    return [
        *metrics.worker_middleware(settings),
        *error_reports.worker_middleware(settings),
    ]


def instrument_api(app: Flask, settings: Settings) -> None:
    """Traces of the API's requests and its ``/metrics``, when switched on."""
    from app.observability import api_metrics, tracing

    tracing.instrument_api(app)
    api_metrics.register(app, settings)
