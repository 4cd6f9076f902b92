"""What every uploaded archive must obey, whatever its format.

The limits, the budget that counts members and bytes against them, the checks of a
member's name, and the counted write of a member's bytes. ``untar`` and ``unzip`` apply
them; ``archive`` chooses between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from app.errors import PermanentError

CHUNK = 1 << 16
#: Archives smaller than this uncompressed are never judged by their ratio.
RATIO_FLOOR = 1 << 20
#: Longest member name, in UTF-8 bytes: the ``path`` column of a stanza holds 1024.
MAX_NAME = 1024
#: Longest part of a member's path, in UTF-8 bytes (Linux's NAME_MAX).
MAX_NAME_PART = 255


class UnsafeArchive(PermanentError):
    """The archive is corrupt, hostile or over a limit; nothing from it is kept."""


@dataclass(frozen=True)
class Limits:
    max_members: int = 10_000
    max_total_bytes: int = 512 * 1024 * 1024
    max_ratio: float = 100.0


def safe_relative(name: str) -> PurePosixPath:
    """The member's path, if it stays inside the extraction directory and can be stored."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        # tarfile keeps undecodable bytes as lone surrogates, which no database accepts.
        raw = name.encode("utf-8", "surrogateescape")
        raise UnsafeArchive(f"member {raw!r}: its name is not UTF-8") from None
    if len(encoded) > MAX_NAME:
        raise UnsafeArchive(f"member {name[:100]!r}…: name longer than {MAX_NAME} bytes")
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
    if any(len(part.encode("utf-8")) > MAX_NAME_PART for part in parts):
        raise UnsafeArchive(f"member {name!r}: a part of its path over {MAX_NAME_PART} bytes")
    return PurePosixPath(*parts)


class Budget:
    """Counts members and bytes against the limits; the first one over raises UnsafeArchive.

    Two totals are kept, each held to the limits: the bytes decompressed (for a tar, every
    byte tarfile reads, headers included) and the bytes written to files. The ratio is
    the total over the archive's size on disk.
    """

    def __init__(self, limits: Limits, compressed_size: int) -> None:
        self.limits = limits
        self.compressed_size = max(compressed_size, 1)
        self.members = 0
        self.decompressed = 0
        self.written = 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchive(f"member {name!r}: more than {self.limits.max_members} members")

    def read(self, size: int, where: str) -> None:
        """Count ``size`` bytes decompressed at ``where`` (a member, or the headers after one)."""
        self.decompressed += size
        self._check(self.decompressed, where)

    def add(self, name: str, size: int) -> None:
        """Count ``size`` bytes written to member ``name``."""
        self.written += size
        self._check(self.written, f"member {name!r}")

    def _check(self, total: int, where: str) -> None:
        if total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"{where}: total uncompressed size over {self.limits.max_total_bytes} bytes"
            )
        if total > self.limits.max_ratio * self.compressed_size and total > RATIO_FLOOR:
            raise UnsafeArchive(
                f"{where}: compression ratio over {self.limits.max_ratio:g} (a bomb?)"
            )


def write(source: IO[bytes], target: Path, name: str, budget: Budget) -> None:
    """Copy a member's bytes to ``target``, counting what is read, not what was declared."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        while chunk := source.read(CHUNK):
            budget.add(name, len(chunk))
            out.write(chunk)
