"""Percentiles from bucket counts, the way Prometheus' ``histogram_quantile`` reads them.

The database counts durations into fixed buckets in one aggregate pass (no sort, no rows
sent back); a percentile is then read off the cumulative counts, linearly within its bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Upper bounds, in seconds, of the duration buckets (the last one is open).
BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip


def percentile(cumulative: Sequence[int], quantile: float) -> float | None:
    """The ``quantile`` (0-1) of durations whose count at or below ``BOUNDS[i]`` is
    ``cumulative[i]``, and whose total is ``cumulative[-1]`` (one more entry than BOUNDS,
    for the open bucket). None without any duration."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in zip(BOUNDS, cumulative, strict=False):
        if count >= rank:
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return BOUNDS[-1]  # In the open bucket: at least the last bound.
