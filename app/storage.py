"""Content-addressed file storage under JOBSTACK_STORAGE_DIR: a file is named by its SHA-256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app.errors import JobstackError

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
