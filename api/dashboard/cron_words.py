"""A cron spec in words ("every 10 minutes", "every day at 03:17 UTC")."""

from __future__ import annotations

WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _step(field: str) -> int | None:
    if field.startswith("*/") and field[2:].isdigit():
        return int(field[2:])
    return None


def _days(dom: str, month: str, dow: str) -> str:
    parts = []
    if dow != "*":
        names = [WEEKDAYS[int(d) % 7] if d.isdigit() else d for d in dow.split(",")]
        parts.append("on " + ", ".join(names))
    if dom != "*":
        parts.append(f"on day {dom} of the month")
    if month != "*":
        names = [
            MONTHS[int(m) - 1] if m.isdigit() and 1 <= int(m) <= 12 else m for m in month.split(",")
        ]
        parts.append("in " + ", ".join(names))
    return " ".join(parts)


def describe(spec: str) -> str:
    """Common shapes in plain words; anything else field by field. Times are UTC."""
    fields = spec.split()
    if len(fields) != 5:
        return spec
    minute, hour, dom, month, dow = fields
    days = _days(dom, month, dow)
    suffix = f" {days}" if days else ""
    every = "every day" if not days else ""
    if minute == "*" and hour == "*":
        return f"every minute{suffix}"
    if (step := _step(minute)) is not None and hour == "*":
        return f"every {step} minutes{suffix}"
    if minute.isdigit() and hour == "*":
        return f"every hour at minute {int(minute)}{suffix}"
    if minute.isdigit() and (step := _step(hour)) is not None:
        return f"every {step} hours at minute {int(minute)}{suffix}"
    if minute.isdigit() and all(h.isdigit() for h in hour.split(",")):
        times = ", ".join(f"{int(h):02d}:{int(minute):02d}" for h in hour.split(","))
        return " ".join(part for part in (every, days, f"at {times} UTC") if part)
    return f"minute {minute}, hour {hour}, day {dom}, month {month}, weekday {dow} (UTC)"
