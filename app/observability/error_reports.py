"""Sentry: one event per job that fails for good."""

from __future__ import annotations

from dramatiq.middleware import Middleware

from app.config import Settings


def init_error_reports(settings: Settings) -> None:
    """Start Sentry when ``SENTRY_DSN`` is set; before any broker exists."""
    return None


def worker_middleware(settings: Settings) -> list[Middleware]:
    return []
