"""A parser per country's dataset format (a registry), each refusing bad input by line."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from app.errors import PermanentError


class DatasetError(PermanentError):
    """The dataset file is not in its country's format; it will not be retried."""


@dataclass(frozen=True)
class Record:
    name: str
    sex: str
    count: int


Parser = Callable[[Iterable[str]], Iterator[Record]]
YearOf = Callable[[str], int]

#: Longest line of a dataset file, in bytes, line break included.
MAX_LINE = 1024
#: A count is stored in a 32-bit integer column.
MAX_COUNT = 2**31 - 1

# ASCII digits only: int() also reads Arabic-Indic and other Unicode digits ("١٢" is 12),
# and str.isdigit() accepts superscripts ("²") that int() then refuses.
SSA_FILE = re.compile(r"^yob([0-9]{4})\.txt$")
SSA_NAME = re.compile(r"^[A-Za-z][A-Za-z'-]{0,99}$")
COUNT = re.compile(r"[0-9]{1,10}")


def read_lines(file: IO[bytes]) -> Iterator[str]:
    """The lines of a dataset file, decoded; one not UTF-8 or over MAX_LINE is refused.

    Read as bytes and decoded line by line, so that the error names the line, and a
    line is never held longer than MAX_LINE.
    """
    number = 0
    while raw := file.readline(MAX_LINE + 1):
        number += 1
        if len(raw) > MAX_LINE:
            raise DatasetError(f"line {number}: longer than {MAX_LINE} bytes")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatasetError(
                f"line {number}: not UTF-8 text (byte {error.start + 1}: {error.reason})"
            ) from None
        yield line


def ssa_year(file_name: str) -> int:
    """The year of a Social Security Administration file (``yob2023.txt``)."""
    match = SSA_FILE.match(file_name)
    if match is None:
        raise DatasetError(f"file name {file_name!r} is not yobYYYY.txt")
    return int(match.group(1))


def parse_ssa(lines: Iterable[str]) -> Iterator[Record]:
    """US Social Security Administration lines: ``Name,Sex,Count``."""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != 3:
            raise DatasetError(f"line {number}: expected Name,Sex,Count, got {line[:80]!r}")
        name, sex, count = fields
        if not SSA_NAME.match(name):
            raise DatasetError(f"line {number}: {name[:80]!r} is not a name")
        if sex not in ("F", "M"):
            raise DatasetError(f"line {number}: sex must be F or M, not {sex[:10]!r}")
        if not COUNT.fullmatch(count) or not 0 < int(count) <= MAX_COUNT:
            raise DatasetError(
                f"line {number}: count must be a positive integer of at most {MAX_COUNT},"
                f" not {count[:20]!r}"
            )
        yield Record(name, sex, int(count))


#: Country code → (parser of lines, year from the file name).
PARSERS: dict[str, tuple[Parser, YearOf]] = {"US": (parse_ssa, ssa_year)}


def parser_for(country: str) -> tuple[Parser, YearOf]:
    try:
        return PARSERS[country]
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise DatasetError(f"no parser for country {country!r} (known: {known})") from None
