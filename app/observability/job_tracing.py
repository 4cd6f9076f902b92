"""The worker's spans: one CONSUMER span ``process <queue>`` per attempt."""

from __future__ import annotations

from dramatiq.middleware import Middleware

from app.config import Settings


def worker_middleware(settings: Settings) -> list[Middleware]:
    return []
