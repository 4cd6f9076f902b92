"""Sentry: one event per job that fails for good.

Off unless ``SENTRY_DSN`` is set, and then sentry_sdk is not even imported. The other
``SENTRY_*`` variables (environment, release, debug…) are read by sentry-sdk itself;
jobstack turns on no performance tracing (OpenTelemetry traces jobs, see
:mod:`.tracing`).

The worker's half is :mod:`.job_error_reports`, the middleware that decides which
failures become events. In the API, Sentry's Flask integration reports the unhandled
errors, the 500s; an HTTP error raised on purpose (4xx) never reaches it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dramatiq.middleware import Middleware

from app.config import Settings

if TYPE_CHECKING:
    from sentry_sdk._types import Event, Hint

#: Loggers whose ERROR records would be second, untagged reports of what the worker
#: middleware reports itself: Dramatiq's "Failed to process message" (logged on every
#: failed attempt, before Retries has decided) and jobstack's poison verdict (logged
#: on the group committer's thread, away from the job's scope).
DUPLICATE_LOGGERS = ("dramatiq.worker.WorkerThread", "app.recording.attempts")


def enabled() -> bool:
    """Whether error reports are on: ``SENTRY_DSN`` is set (sentry-sdk reads its value)."""
    return bool(os.environ.get("SENTRY_DSN"))


def init_error_reports(settings: Settings) -> None:
    """Start Sentry when ``SENTRY_DSN`` is set; before any broker exists.

    Sentry's Dramatiq integration patches ``Broker.__init__`` to put its middleware first
    in every broker made afterwards, so this runs before ``create_broker``.
    """
    if not enabled():
        return
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import ignore_logger

    if sentry_sdk.is_initialized():
        return  # A second import of app.broker, or a test: the first client stands.
    sentry_sdk.init(
        integrations=[FlaskIntegration(), DramatiqIntegration()],
        before_send=_tag_api_request,
    )
    for name in DUPLICATE_LOGGERS:
        ignore_logger(name)


def worker_middleware(settings: Settings) -> list[Middleware]:
    """The middleware that tags and filters Sentry's job events; none when Sentry is off."""
    if not enabled():
        return []
    import sentry_sdk
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    from app.observability.job_error_reports import JobErrorReports

    if sentry_sdk.get_client().get_integration(DramatiqIntegration) is None:
        return []  # Sentry was not started: its own middleware is missing too.
    return [JobErrorReports()]


def _tag_api_request(event: Event, hint: Hint) -> Event | None:
    """Tags an API error with the request's correlation id, as its log lines are."""
    from flask import g, has_request_context

    if has_request_context() and "correlation_id" in g:
        event.setdefault("tags", {}).setdefault("correlation_id", g.correlation_id)
    return event
