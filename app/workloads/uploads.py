"""Uploaded files that a job processes: stored by content, recorded and queued in one
transaction.

Files are kept under JOBSTACK_STORAGE_DIR, each named by its SHA-256, so an identical
upload is stored once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

from app import db
from app.config import load_settings
from app.errors import JobstackError
from app.jobs import submit

CHUNK = 1 << 16


class TooLarge(JobstackError):
    """The upload is larger than allowed."""


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    path: Path


def store(source: IO[bytes], storage_dir: Path, max_bytes: int) -> StoredFile:
    """Copy ``source`` into storage, hashing as it goes; an identical file is kept once.

    The bytes go to a temporary file in the same directory first and are renamed into
    place, so a reader never sees a half-written file.
    """
    storage_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, temporary = tempfile.mkstemp(dir=storage_dir, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"the file is larger than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        name = digest.hexdigest()
        target = storage_dir / name[:2] / name
        target.parent.mkdir(exist_ok=True)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return StoredFile(name, size, target)


def path_of(storage_dir: Path, sha256: str) -> Path:
    return storage_dir / sha256[:2] / sha256


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
