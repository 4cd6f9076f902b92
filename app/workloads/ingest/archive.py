"""Extracting uploaded archives (.tar, .tar.gz/.tgz, .zip) without trusting them.

Every member is checked before anything is written: no absolute path, no ``..``, no
links or device files, and caps on the member count, the total uncompressed size and the
compression ratio. Files are written by this code (never by tarfile/zipfile's extract)
into a fresh temporary directory, counting the bytes actually written. The first
violation raises UnsafeArchive naming the member and the reason.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from app.errors import PermanentError

CHUNK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"
#: Archives smaller than this uncompressed are never judged by their ratio.
RATIO_FLOOR = 1 << 20


class UnsafeArchive(PermanentError):
    """The archive is corrupt, hostile or over a limit; nothing from it is kept."""


@dataclass(frozen=True)
class Limits:
    max_members: int = 10_000
    max_total_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 100.0


def _safe_relative(name: str) -> PurePosixPath:
    """The member's path, if it stays inside the extraction directory."""
    if "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"member {name!r}: unusual characters in its name")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(f"member {name!r}: absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"member {name!r}: '..' in its path")
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts:
        raise UnsafeArchive(f"member {name!r}: empty path")
    return PurePosixPath(*parts)


class _Budget:
    """Counts members and bytes against the limits."""

    def __init__(self, limits: Limits, compressed_size: int) -> None:
        self.limits = limits
        self.compressed_size = max(compressed_size, 1)
        self.members = 0
        self.total = 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchive(f"member {name!r}: more than {self.limits.max_members} members")

    def add(self, name: str, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"member {name!r}: total uncompressed size over {self.limits.max_total_bytes} bytes"
            )
        if self.total > self.limits.max_ratio * self.compressed_size and self.total > RATIO_FLOOR:
            raise UnsafeArchive(
                f"member {name!r}: compression ratio over {self.limits.max_ratio:g} (a bomb?)"
            )


def _write(source: IO[bytes], target: Path, name: str, budget: _Budget) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        while chunk := source.read(CHUNK):
            budget.add(name, len(chunk))
            out.write(chunk)


def _extract_tar(archive: Path, into: Path, budget: _Budget) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                budget.member(member.name)
                relative = _safe_relative(member.name)
                if member.issym() or member.islnk():
                    raise UnsafeArchive(f"member {member.name!r}: links are not allowed")
                if member.isdir():
                    (into / relative).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise UnsafeArchive(f"member {member.name!r}: not a regular file or directory")
                source = tar.extractfile(member)
                assert source is not None
                _write(source, into / relative, member.name, budget)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(error, UnsafeArchive):
            raise
        raise UnsafeArchive(f"corrupt or truncated tar archive: {error}") from None


def _extract_zip(archive: Path, into: Path, budget: _Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                budget.member(info.filename)
                relative = _safe_relative(info.filename)
                # Unix file type bits, when the archiver recorded them (0: plain file).
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise UnsafeArchive(f"member {info.filename!r}: links are not allowed")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafeArchive(
                        f"member {info.filename!r}: not a regular file or directory"
                    )
                if info.is_dir():
                    (into / relative).mkdir(parents=True, exist_ok=True)
                    continue
                with zipped.open(info) as source:
                    _write(source, into / relative, info.filename, budget)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
        if isinstance(error, UnsafeArchive):
            raise
        raise UnsafeArchive(f"corrupt or truncated zip archive: {error}") from None


@contextmanager
def extracted(archive: Path, limits: Limits | None = None) -> Iterator[Path]:
    """Extract ``archive`` into a fresh temporary directory, removed afterwards."""
    budget = _Budget(limits or Limits(), archive.stat().st_size)
    into = Path(tempfile.mkdtemp(prefix="jobstack-extract-"))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, into, budget)
        elif _is_tar(archive):
            _extract_tar(archive, into, budget)
        else:
            raise UnsafeArchive("not a .tar, .tar.gz/.tgz or .zip archive")
        yield into
    finally:
        shutil.rmtree(into, ignore_errors=True)


def _is_tar(archive: Path) -> bool:
    try:
        with tarfile.open(archive, "r:*"):
            return True
    except (tarfile.TarError, EOFError, OSError):
        # A damaged .tar.gz is still a tar archive: its extraction reports it as corrupt.
        with archive.open("rb") as head:
            return head.read(2) == GZIP_MAGIC
