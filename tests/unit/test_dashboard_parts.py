"""The dashboard's pure parts: percentiles from bucket counts, cron specs in words, the
frame a failure is grouped by, the numbers as written, and the SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.dashboard.charts import latency_chart, throughput_chart
from api.dashboard.cron_words import describe
from api.dashboard.failure_groups import top_frame
from api.dashboard.formatting import duration, size
from api.dashboard.percentiles import BOUNDS, percentile
from api.dashboard.throughput import Bucket, Throughput


def _cumulative(durations: list[float]) -> list[int]:
    return [sum(d <= bound for d in durations) for bound in BOUNDS] + [len(durations)]


def test_a_percentile_is_read_within_its_bucket() -> None:
    durations = [0.003] * 50 + [0.2] * 45 + [4.0] * 5
    counts = _cumulative(durations)
    assert percentile(counts, 0.5) == pytest.approx(0.005)  # the 50th of 50 in (0, 5 ms]
    p95 = percentile(counts, 0.95)
    assert p95 is not None and 0.1 < p95 <= 0.25
    p99 = percentile(counts, 0.99)
    assert p99 is not None and 2.5 < p99 <= 5.0
    assert percentile(_cumulative([]), 0.5) is None
    # Beyond the last bound: at least that bound, never more than what was seen.
    assert percentile(_cumulative([999_999.0]), 0.5) == BOUNDS[-1]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("*/10 * * * *", "every 10 minutes"),
        ("* * * * *", "every minute"),
        ("17 3 * * *", "every day at 03:17 UTC"),
        ("0 * * * *", "every hour at minute 0"),
        ("0 6,18 * * 1", "on Monday at 06:00, 18:00 UTC"),
        ("30 2 1 * *", "on day 1 of the month at 02:30 UTC"),
        ("5 4 * 1 *", "in January at 04:05 UTC"),
    ],
)
def test_common_cron_specs_read_as_words(spec: str, words: str) -> None:
    assert describe(spec) == words


def test_the_innermost_frame_names_a_failure_group() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/dramatiq/worker.py", line 500, in process_message\n'
        '  File "/srv/jobstack/actors/ingest.py", line 88, in parse_archive\n'
        "ValueError: bad member"
    )
    assert top_frame(traceback) == "actors/ingest.py:88 in parse_archive"
    assert top_frame(None) == "?" and top_frame("no frames here") == "?"


def test_durations_and_sizes_read_naturally() -> None:
    assert [duration(s) for s in (None, 0.0042, 4.25, 185, 7800, 90000)] == [
        "–", "4 ms", "4.2 s", "3 min 5 s", "2 h 10 min", "1 d 1 h",
    ]  # fmt: skip
    assert [size(n) for n in (None, 512, 76_300_000)] == ["–", "512 B", "72.8 MiB"]


def test_charts_draw_one_bar_per_bucket_and_escape_their_text() -> None:
    start = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    buckets = [
        Bucket(start, 3, 1, 0.01, 0.02, 0.5, 1.0),
        Bucket(start, 0, 0, None, None, None, None),
        Bucket(start, 5, 0, 0.02, 0.04, 0.7, 1.5),
    ]
    data = Throughput("1h", 60, buckets, 8, 1, 0.01, 0.03, 0.04, 0.6, 1.2, 1.5)
    bars = str(throughput_chart(data))
    assert bars.count('class="ok"') == 3 and bars.count('class="bad"') == 3
    assert "8 succeeded, 1 failed over the last 1h" in bars
    lines = str(latency_chart(data))
    # The empty bucket breaks each line in two: a gap, not a drop to zero.
    assert lines.count('class="dot wait"') == 2 and lines.count('class="dot run"') == 2
    assert lines.count(" M") + lines.count('"M') == 4
