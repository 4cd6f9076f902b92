"""Extracting a .zip, with its central directory bounded before zipfile reads it.

zipfile reads the whole central directory and builds a ZipInfo for every entry it holds,
whatever the End Of Central Directory record claims. So the directory is walked here
first, header by header without keeping any: more than ``max_members`` entries, a name
over MAX_NAME, extra fields and comments over MAX_ENTRY_EXTRAS, or a directory that does
not match its record or the file is refused before zipfile sees it. A member's declared
size is not trusted: the bytes actually read are counted.
"""

from __future__ import annotations

import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app.workloads.ingest.rules import (
    MAX_NAME,
    Budget,
    Limits,
    UnsafeArchive,
    safe_relative,
    write,
)

#: Most bytes of extra fields and comment one central directory entry may carry.
MAX_ENTRY_EXTRAS = 4096
#: Compression methods accepted: stored, deflated, bzip2. LZMA would let the archive
#: choose how much memory the decoder allocates.
METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflated",
    zipfile.ZIP_BZIP2: "bzip2",
}

EOCD = struct.Struct("<4s4H2LH")
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
ENTRY = struct.Struct("<4s6H3L5H2L")
EOCD_SIGNATURE = b"PK\x05\x06"
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
ENTRY_SIGNATURE = b"PK\x01\x02"
MAX_COMMENT = 0xFFFF
UTF8_FLAG = 0x800
#: Encrypted (bit 0) or strongly encrypted (bit 6).
ENCRYPTED_FLAGS = 0x1 | 0x40


@dataclass(frozen=True)
class Directory:
    """Where zipfile will find the central directory, as it computes it."""

    entries: int
    size: int
    start: int
    end: int


def directory_of(file: IO[bytes], file_size: int) -> Directory:
    """The central directory the End Of Central Directory record points to (ZIP64 too).

    Found the way zipfile finds it (the last EOCD signature of the file's tail, a ZIP64
    record just before it), so that what is checked is what zipfile will read.
    """
    tail_size = min(file_size, EOCD.size + MAX_COMMENT + 1)
    file.seek(file_size - tail_size)
    tail = file.read(tail_size)
    last = len(tail) - EOCD.size
    if last >= 0 and tail[last : last + 4] == EOCD_SIGNATURE and tail[-2:] == b"\0\0":
        found = last  # no archive comment: zipfile looks here first
    else:
        found = tail.rfind(EOCD_SIGNATURE)
    if found < 0 or found + EOCD.size > len(tail):
        raise UnsafeArchive("corrupt zip archive: no end of central directory record")
    location = file_size - tail_size + found
    _, disk, _, _, entries, size, offset, _ = EOCD.unpack_from(tail, found)
    if disk != 0:
        raise UnsafeArchive("corrupt zip archive: spans several disks")
    directory_end = location
    if location >= ZIP64_LOCATOR.size + ZIP64_EOCD.size:
        file.seek(location - ZIP64_LOCATOR.size)
        if file.read(4) == ZIP64_LOCATOR_SIGNATURE:
            file.seek(location - ZIP64_LOCATOR.size - ZIP64_EOCD.size)
            record = file.read(ZIP64_EOCD.size)
            if record[:4] == ZIP64_EOCD_SIGNATURE:
                _, _, _, _, _, _, _, entries, size, offset = ZIP64_EOCD.unpack(record)
                directory_end = location - ZIP64_LOCATOR.size - ZIP64_EOCD.size
    # Data before the archive (a self-extracting stub) shifts every offset alike.
    start = directory_end - size
    if size > directory_end or offset > start:
        raise UnsafeArchive("corrupt zip archive: its central directory lies outside the file")
    return Directory(entries, size, start, directory_end)


def check_directory(file: IO[bytes], file_size: int, limits: Limits) -> None:
    """Refuse a central directory too large to read, before zipfile reads it whole."""
    directory = directory_of(file, file_size)
    if directory.entries > limits.max_members:
        raise UnsafeArchive(
            f"its central directory claims {directory.entries} members,"
            f" more than {limits.max_members}"
        )
    largest = limits.max_members * (ENTRY.size + MAX_NAME + MAX_ENTRY_EXTRAS)
    if directory.size > largest:
        raise UnsafeArchive(f"its central directory is over {largest} bytes")
    file.seek(directory.start)
    walked, count = 0, 0
    while walked < directory.size:
        header = file.read(ENTRY.size)
        if len(header) < ENTRY.size or header[:4] != ENTRY_SIGNATURE:
            raise UnsafeArchive("corrupt zip archive: bad central directory entry")
        fields = ENTRY.unpack(header)
        flags, name_size, extra_size, comment_size = fields[3], fields[10], fields[11], fields[12]
        count += 1
        if count > limits.max_members:
            raise UnsafeArchive(f"more than {limits.max_members} members")
        name = _name(file.read(name_size), flags)
        if name_size > MAX_NAME:
            raise UnsafeArchive(f"member {name[:100]!r}…: name longer than {MAX_NAME} bytes")
        if extra_size + comment_size > MAX_ENTRY_EXTRAS:
            raise UnsafeArchive(
                f"member {name!r}: extra fields and comment over {MAX_ENTRY_EXTRAS} bytes"
            )
        file.seek(extra_size + comment_size, 1)
        walked += ENTRY.size + name_size + extra_size + comment_size
    if walked != directory.size or count != directory.entries:
        raise UnsafeArchive("corrupt zip archive: its central directory does not match its record")


def _name(raw: bytes, flags: int) -> str:
    """A member's name decoded as zipfile decodes it; a bad UTF-8 one is refused."""
    if not flags & UTF8_FLAG:
        return raw.decode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeArchive(f"member {raw!r}: its name is not UTF-8") from None


def extract_zip(archive: Path, into: Path, budget: Budget) -> None:
    try:
        with archive.open("rb") as file:
            check_directory(file, archive.stat().st_size, budget.limits)
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                _extract_member(zipped, info, into, budget)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        OverflowError,
        NotImplementedError,
        zlib.error,
    ) as error:
        # zipfile's own refusals, and what its readers raise on data they cannot follow
        # (an offset past any file, a feature it does not implement).
        if isinstance(error, UnsafeArchive):
            raise
        raise UnsafeArchive(f"corrupt or truncated zip archive: {error}") from None


def _extract_member(
    zipped: zipfile.ZipFile, info: zipfile.ZipInfo, into: Path, budget: Budget
) -> None:
    budget.member(info.filename)
    relative = safe_relative(info.filename)
    # Unix file type bits, when the archiver recorded them (0: plain file).
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UnsafeArchive(f"member {info.filename!r}: links are not allowed")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchive(f"member {info.filename!r}: not a regular file or directory")
    if info.is_dir():
        (into / relative).mkdir(parents=True, exist_ok=True)
        return
    if info.flag_bits & ENCRYPTED_FLAGS:
        raise UnsafeArchive(f"member {info.filename!r}: encrypted")
    if info.compress_type not in METHODS:
        raise UnsafeArchive(
            f"member {info.filename!r}: compression method {info.compress_type} is not"
            f" allowed (only {', '.join(METHODS.values())})"
        )
    with zipped.open(info) as source:
        write(source, into / relative, info.filename, budget)
