"""Delivering webhooks of finished jobs."""

from __future__ import annotations

from typing import Any

import dramatiq

from app import webhooks


@dramatiq.actor(
    actor_name="webhooks.deliver",
    max_retries=8,
    min_backoff=5_000,
    max_backoff=600_000,
    time_limit=60 * 1000,
)
def deliver(job_id: str) -> dict[str, Any]:
    """POST job ``job_id``'s JSON to its callback URL with X-Jobstack-Signature; a refused
    destination or a redirect fails the job at once, other failures are retried."""
    return webhooks.deliver(job_id)
