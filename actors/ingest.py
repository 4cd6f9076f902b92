"""Ingestion of uploaded Splunk configuration archives."""

from __future__ import annotations

import dramatiq

from app.workloads.ingest import runs


@dramatiq.actor(actor_name="ingest.parse_run", max_retries=3, time_limit=15 * 60 * 1000)
def parse_run(run_id: str) -> dict[str, int]:
    """Extract the run's archive safely and store every stanza of its .conf files."""
    return runs.parse_run(run_id)
