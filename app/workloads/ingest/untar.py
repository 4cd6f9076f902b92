"""Extracting a .tar or .tar.gz/.tgz with every byte counted, headers included.

tarfile reads a member's headers whole before anyone can look at them: a GNU long name
or a PAX header of 64 MiB is 64 MiB in memory, and chained ones recurse. So tarfile reads
through :class:`CountedStream`, which holds every byte to the archive's budget and allows
at most MAX_HEADER_BYTES between one member's data and the next member, refusing a read
that would go over before it is made. Members are read in one pass, and forgotten once
written.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path
from typing import Protocol

from app.workloads.ingest.rules import CHUNK, Budget, UnsafeArchive, safe_relative, write

#: Most bytes tarfile may read to reach a member's data: its header blocks, GNU long
#: name and link, PAX headers, and the padding of the member before.
MAX_HEADER_BYTES = 64 * 1024
#: Most bytes of PAX global headers an archive may keep (``git archive`` writes 52).
MAX_GLOBAL_HEADERS = 8 * 1024


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _OnePass(tarfile.TarFile):
    """A TarFile whose list of members this module empties as it goes."""

    members: list[tarfile.TarInfo]  # CPython's own attribute, left out of typeshed


class CountedStream(io.BufferedIOBase):
    """A forward-only view of the decompressed tar that counts what tarfile reads."""

    def __init__(self, source: Readable, budget: Budget) -> None:
        super().__init__()
        self.source = source
        self.budget = budget
        self.position = 0
        self.where = "the first tar header"
        #: Bytes tarfile may still read while looking for the next member (None: in data).
        self.header_room: int | None = MAX_HEADER_BYTES

    def headers_after(self, name: str) -> None:
        """tarfile is about to look for the member after ``name``."""
        self.where, self.header_room = f"the tar headers after member {name!r}", MAX_HEADER_BYTES

    def data_of(self, name: str) -> None:
        """tarfile is about to read the data of member ``name``."""
        self.where, self.header_room = f"member {name!r}", None

    def trailer(self) -> None:
        """The last member is read; what follows is padding, counted like the rest."""
        self.where, self.header_room = "the end of the tar archive", None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if self.header_room is not None:
            if size > self.header_room:
                raise UnsafeArchive(f"{self.where}: tar headers over {MAX_HEADER_BYTES} bytes")
            self.header_room -= size
        data = self.source.read(size)
        self.position += len(data)
        self.budget.read(len(data), self.where)
        return data

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        target = offset + (self.position if whence == io.SEEK_CUR else 0)
        if whence == io.SEEK_END or target < self.position:
            raise io.UnsupportedOperation("a tar is read forwards only")
        # Skipped bytes are decompressed all the same, so they are read (and counted).
        while self.position < target and self.read(min(CHUNK, target - self.position)):
            pass
        return self.position


def extract_tar(source: Readable, into: Path, budget: Budget) -> None:
    """Extract the tar read from ``source`` (already decompressed) into ``into``."""
    stream = CountedStream(source, budget)
    try:
        _extract(stream, into, budget)
        # Reading to the end lets gzip check its CRC and length: a damaged file is refused.
        stream.trailer()
        stream.read()
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as error:
        if isinstance(error, UnsafeArchive):
            raise
        raise UnsafeArchive(f"corrupt or truncated tar archive: {error}") from None


def _extract(stream: CountedStream, into: Path, budget: Budget) -> None:
    with _OnePass.open(
        fileobj=stream, mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as tar:
        while (member := tar.next()) is not None:
            stream.data_of(member.name)
            # Each member is seen once: tarfile's list of them would keep every header
            # (and a copy of the global PAX headers with each) for nothing.
            tar.members.clear()
            if sum(len(k) + len(v) for k, v in tar.pax_headers.items()) > MAX_GLOBAL_HEADERS:
                raise UnsafeArchive(
                    f"member {member.name!r}: PAX global headers over {MAX_GLOBAL_HEADERS} bytes"
                )
            _extract_member(tar, member, into, budget)
            stream.headers_after(member.name)


def _extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path, budget: Budget
) -> None:
    budget.member(member.name)
    relative = safe_relative(member.name)
    if member.issym() or member.islnk():
        raise UnsafeArchive(f"member {member.name!r}: links are not allowed")
    if member.isdir():
        (into / relative).mkdir(parents=True, exist_ok=True)
        return
    if member.issparse():
        raise UnsafeArchive(f"member {member.name!r}: sparse files are not allowed")
    if not member.isfile():
        raise UnsafeArchive(f"member {member.name!r}: not a regular file or directory")
    source = tar.extractfile(member)
    assert source is not None
    write(source, into / relative, member.name, budget)
