"""How the dashboard writes times, durations, sizes and numbers (Jinja filters)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask

from app.timeutil import utcnow


def duration(seconds: float | None) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``; ``–`` for none."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def timestamp(moment: datetime | None) -> str:
    """UTC, to the second: ``2026-12-02 01:23:45``."""
    if moment is None:
        return "–"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago: ``12 s ago``; ``in 3 min`` for the future."""
    if moment is None:
        return "–"
    seconds = ((now or utcnow()) - moment).total_seconds()
    if seconds < 0:
        return f"in {duration(-seconds)}"
    return f"{duration(seconds)} ago"


def size(count: int | None) -> str:
    """Bytes in KiB, MiB or GiB."""
    if count is None:
        return "–"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def number(value: int | float | None) -> str:
    """Thousands separated by a thin space: 1 000 000."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}".replace(",", "\u2009")
    return f"{int(value):,}".replace(",", "\u2009")


def register(app: Flask) -> None:
    filters: dict[str, Callable[..., str]] = {
        "duration": duration,
        "timestamp": timestamp,
        "age": age,
        "size": size,
        "number": number,
    }
    for name, function in filters.items():
        app.add_template_filter(function, name)
