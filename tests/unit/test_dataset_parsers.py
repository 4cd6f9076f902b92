"""The SSA (US) baby-name format, and what it refuses."""

from __future__ import annotations

import pytest

from app.workloads.datasets.parsers import DatasetError, Record, parse_ssa, parser_for, ssa_year


def test_ssa_lines_become_records() -> None:
    lines = ["Olivia,F,15270\n", "Liam,M,20456\n", "\n", "D'Angelo,M,7\n"]
    assert list(parse_ssa(lines)) == [
        Record("Olivia", "F", 15270),
        Record("Liam", "M", 20456),
        Record("D'Angelo", "M", 7),
    ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("Olivia,F", "line 2: expected Name,Sex,Count"),
        ("Olivia,X,5", "line 2: sex must be F or M"),
        ("Olivia,F,0", "line 2: count must be a positive integer"),
        ("Olivia,F,-3", "line 2: count must be a positive integer"),
        ("Olivia,F,many", "line 2: count must be a positive integer"),
        ("Ol1via,F,5", "line 2: 'Ol1via' is not a name"),
    ],
)
def test_a_malformed_line_is_refused_with_its_number(line: str, error: str) -> None:
    with pytest.raises(DatasetError, match=error):
        list(parse_ssa(["Emma,F,100", line]))


def test_the_year_comes_from_the_file_name() -> None:
    assert ssa_year("yob2023.txt") == 2023
    with pytest.raises(DatasetError, match=r"is not yobYYYY\.txt"):
        ssa_year("names-2023.csv")


def test_an_unknown_country_is_refused() -> None:
    with pytest.raises(DatasetError, match="no parser for country 'XX'"):
        parser_for("XX")
