"""Worker metrics for Prometheus, merged across a host's worker processes."""

from __future__ import annotations

from dramatiq.middleware import Middleware

from app.config import Settings


def worker_middleware(settings: Settings) -> list[Middleware]:
    return []
