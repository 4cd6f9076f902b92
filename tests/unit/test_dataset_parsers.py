"""The SSA (US) baby-name format, and what it refuses."""

from __future__ import annotations

import io

import pytest

from app.workloads.datasets.parsers import (
    MAX_LINE,
    DatasetError,
    Record,
    parse_ssa,
    parser_for,
    read_lines,
    ssa_year,
)


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
        # int() refuses a superscript that str.isdigit() accepts: it was retried.
        ("Olivia,F,²", "line 2: count must be a positive integer"),
        # int() reads other scripts' digits: this was loaded as 12.
        ("Olivia,F,١٢", "line 2: count must be a positive integer"),
        ("Olivia,F,１２", "line 2: count must be a positive integer"),
        # Over the column's 32 bits: the database refused it, and it was retried.
        ("Olivia,F,100000000000000000000", "line 2: count must be a positive integer"),
        ("Olivia,F,2147483648", "line 2: count must be a positive integer of at most 2147483647"),
        ("Olivia,F,+5", "line 2: count must be a positive integer"),
        ("Olivia,F,5_000", "line 2: count must be a positive integer"),
    ],
)
def test_a_malformed_line_is_refused_with_its_number(line: str, error: str) -> None:
    with pytest.raises(DatasetError, match=error):
        list(parse_ssa(["Emma,F,100", line]))


def test_the_largest_count_the_column_holds_is_accepted() -> None:
    assert list(parse_ssa(["Emma,F,2147483647"])) == [Record("Emma", "F", 2**31 - 1)]


def test_the_year_comes_from_the_file_name() -> None:
    assert ssa_year("yob2023.txt") == 2023
    with pytest.raises(DatasetError, match=r"is not yobYYYY\.txt"):
        ssa_year("names-2023.csv")
    with pytest.raises(DatasetError, match=r"is not yobYYYY\.txt"):
        ssa_year("yob٢٠٢٣.txt")


def test_lines_that_are_not_utf8_are_refused_with_their_number() -> None:
    file = io.BytesIO(b"Emma,F,5\nZo\xeb,F,7\n")
    with pytest.raises(DatasetError, match="line 2: not UTF-8 text"):
        list(parse_ssa(read_lines(file)))


def test_a_line_over_the_limit_is_refused_before_it_is_read_whole() -> None:
    file = io.BytesIO(b"Emma,F,5\n" + b"x" * (100 * MAX_LINE))
    with pytest.raises(DatasetError, match=f"line 2: longer than {MAX_LINE} bytes"):
        list(read_lines(file))
    assert file.tell() == len("Emma,F,5\n") + MAX_LINE + 1


def test_an_unknown_country_is_refused() -> None:
    with pytest.raises(DatasetError, match="no parser for country 'XX'"):
        parser_for("XX")
