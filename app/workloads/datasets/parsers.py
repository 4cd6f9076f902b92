"""A parser per country's dataset format (a registry), each refusing bad input by line."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

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

SSA_FILE = re.compile(r"^yob(\d{4})\.txt$")
SSA_NAME = re.compile(r"^[A-Za-z][A-Za-z'-]{0,99}$")


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
        if not count.isdigit() or int(count) <= 0:
            raise DatasetError(
                f"line {number}: count must be a positive integer, not {count[:20]!r}"
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
