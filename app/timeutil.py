"""UTC time helpers: every timestamp jobstack stores is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch, as Dramatiq counts message timestamps."""
    return int(moment.timestamp() * 1000)
