"""Time arithmetic in SQL that reads the same on PostgreSQL and SQLite.

SQLite keeps timestamps as text (naive UTC, see ``app.models.UTCDateTime``): it measures
with ``julianday``; PostgreSQL with ``extract(epoch …)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, func
from sqlalchemy.sql.elements import ColumnElement

SECONDS_PER_DAY = 86_400.0
#: julianday of 1970-01-01T00:00:00Z.
UNIX_EPOCH_JULIAN_DAY = 2_440_587.5


def epoch_seconds(column: Any, dialect: str) -> ColumnElement[float]:
    """Seconds since 1970 of a timestamp column."""
    if dialect == "postgresql":
        # date_part is a float; EXTRACT is a numeric since PostgreSQL 14, far slower to
        # compute with, many times per row.
        return func.date_part("epoch", column, type_=Float)
    return (func.julianday(column) - UNIX_EPOCH_JULIAN_DAY) * SECONDS_PER_DAY


def seconds_between(start: Any, end: Any, dialect: str) -> ColumnElement[float]:
    """``end - start`` in seconds."""
    if dialect == "postgresql":
        return func.date_part("epoch", end - start, type_=Float)
    return (func.julianday(end) - func.julianday(start)) * SECONDS_PER_DAY
