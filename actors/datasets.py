"""Loading baby-name dataset files."""

from __future__ import annotations

from typing import Any

import dramatiq

from app.workloads.datasets.loading import load_dataset


@dramatiq.actor(actor_name="datasets.parse_dataset", max_retries=3, time_limit=20 * 60 * 1000)
def parse_dataset(dataset_id: str) -> dict[str, Any]:
    """Parse a dataset's file into name records."""
    return load_dataset(dataset_id)


@dramatiq.actor(actor_name="datasets.reprocess_dataset", max_retries=3, time_limit=20 * 60 * 1000)
def reprocess_dataset(dataset_id: str) -> dict[str, Any]:
    """Parse a dataset again; its records are replaced in one transaction."""
    return load_dataset(dataset_id)
