"""Uploaded files that a job processes: stored, recorded and queued in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol, TypeVar

from app import db
from app.config import load_settings
from app.jobs import submit
from app.storage import StoredFile, store


class QueuedRow(Protocol):
    id: str
    job_id: str | None


Row = TypeVar("Row", bound=QueuedRow)


def store_and_queue(
    source: IO[bytes], build: Callable[[StoredFile], Row], actor: str, tenant: str
) -> Row:
    """Store the upload, add the row ``build`` makes of it and submit ``actor(row.id)``.

    The row and its job commit together and the job row is the outbox: the upload
    succeeds while the broker is down, and the job is published when it is back.
    """
    settings = load_settings()
    stored = store(source, Path(settings.storage_dir), settings.upload_max_bytes)
    session = db.new_session()
    try:
        row = build(stored)
        session.add(row)
        session.flush()
        row.job_id = submit(actor, [row.id], session=session, tenant=tenant).id
        session.commit()
    finally:
        session.close()
    return row
