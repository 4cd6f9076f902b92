"""Extracting uploaded archives (.tar, .tar.gz/.tgz, .zip) without trusting them.

Every member is checked before anything is written: no absolute path, no ``..``, no
links or device files, a name that is UTF-8 and short enough to store, and caps on the
member count, the total uncompressed size and the compression ratio, counted on every
byte decompressed, headers included (``rules``). Files are written by this code (never
by tarfile/zipfile's extract) into a fresh temporary directory, counting the bytes
actually written. The first violation raises UnsafeArchive naming the member and the
reason.

The format is told by the file's first bytes: gzip's magic, else a valid tar header,
else a zip's end record. A .tar.gz is decompressed here (``gzip``) and read by tarfile
through a counting stream (``untar``); a zip's central directory is walked before zipfile
reads it (``unzip``).
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.workloads.ingest.rules import Budget, Limits, UnsafeArchive
from app.workloads.ingest.untar import extract_tar
from app.workloads.ingest.unzip import extract_zip

__all__ = ["Limits", "UnsafeArchive", "extracted"]

GZIP_MAGIC = b"\x1f\x8b"


@contextmanager
def extracted(archive: Path, limits: Limits | None = None) -> Iterator[Path]:
    """Extract ``archive`` into a fresh temporary directory, removed afterwards."""
    budget = Budget(limits or Limits(), archive.stat().st_size)
    into = Path(tempfile.mkdtemp(prefix="jobstack-extract-"))
    try:
        with archive.open("rb") as file:
            head = file.read(tarfile.BLOCKSIZE)
            file.seek(0)
            if head.startswith(GZIP_MAGIC):
                with gzip.GzipFile(fileobj=file, mode="rb") as decompressed:
                    extract_tar(decompressed, into, budget)
            elif _is_tar_header(head):
                extract_tar(file, into, budget)
            elif zipfile.is_zipfile(file):
                extract_zip(archive, into, budget)
            else:
                raise UnsafeArchive("not a .tar, .tar.gz/.tgz or .zip archive")
        yield into
    finally:
        shutil.rmtree(into, ignore_errors=True)


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is a tar header with a valid checksum (ustar or older)."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True
