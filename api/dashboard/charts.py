"""Charts drawn as SVG on the server: no script, no library, readable without colour
(each chart has a title, a summary and, for every bar, a tooltip)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from api.dashboard.formatting import duration
from api.dashboard.throughput import Throughput

WIDTH, HEIGHT = 600, 140
TOP, BOTTOM, LEFT = 10, 20, 44


def _frame(title: str, summary: str, body: str, top_label: str, labels: Sequence[str]) -> Markup:
    plot_bottom = HEIGHT - BOTTOM
    axis = (
        f'<line x1="{LEFT}" y1="{plot_bottom}" x2="{WIDTH}" y2="{plot_bottom}" class="axis"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 8}" class="tick" text-anchor="end">'
        f"{escape(top_label)}</text>"
        f'<text x="{LEFT - 4}" y="{plot_bottom}" class="tick" text-anchor="end">0</text>'
    )
    for x, text in ((LEFT, labels[0]), (WIDTH, labels[-1])):
        anchor = "start" if x == LEFT else "end"
        axis += (
            f'<text x="{x}" y="{HEIGHT - 4}" class="tick" text-anchor="{anchor}">'
            f"{escape(text)}</text>"
        )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}: {escape(summary)}" preserveAspectRatio="none">'
        f"<title>{escape(title)}</title>{axis}{body}</svg>"
    )


def throughput_chart(data: Throughput) -> Markup:
    """Succeeded (stacked under failed) jobs per bucket."""
    totals = [b.succeeded + b.failed for b in data.buckets]
    peak = max(totals, default=0) or 1
    plot = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT) / max(len(data.buckets), 1)
    bars = []
    for index, bucket in enumerate(data.buckets):
        x = LEFT + index * step
        ok = plot * bucket.succeeded / peak
        bad = plot * bucket.failed / peak
        tip = f"{bucket.start:%H:%M} UTC: {bucket.succeeded} succeeded, {bucket.failed} failed"
        bars.append(
            f"<g><title>{escape(tip)}</title>"
            f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - ok:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{ok:.1f}" class="ok"/>'
            f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - ok - bad:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{bad:.1f}" class="bad"/></g>'
        )
    labels = [f"{data.buckets[0].start:%H:%M}", "now"] if data.buckets else ["", ""]
    summary = f"{data.succeeded} succeeded, {data.failed} failed over the last {data.window}"
    title = f"Jobs finished per {data.bucket_seconds // 60} min, last {data.window}"
    return _frame(title, summary, "".join(bars), str(peak), labels)


def latency_chart(data: Throughput) -> Markup:
    """Queue wait and run time, 95th percentile per bucket (a gap where none finished)."""
    series = {
        "wait": [b.wait_p95 for b in data.buckets],
        "run": [b.run_p95 for b in data.buckets],
    }
    values = [v for points in series.values() for v in points if v is not None]
    peak = max(values, default=0.0) or 1.0
    plot = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT) / max(len(data.buckets) - 1, 1)
    lines = []
    for name, points in series.items():
        path, pen_down = [], False
        for index, value in enumerate(points):
            if value is None:
                pen_down = False
                continue
            x, y = LEFT + index * step, HEIGHT - BOTTOM - plot * value / peak
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            # A dot per bucket: a lone bucket between gaps is still seen.
            tip = f"{data.buckets[index].start:%H:%M} UTC: {name} p95 {duration(value)}"
            lines.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="dot {name}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        if path:
            lines.append(f'<path d="{" ".join(path)}" class="line {name}"/>')
    labels = [f"{data.buckets[0].start:%H:%M}", "now"] if data.buckets else ["", ""]
    summary = (
        f"queue wait p95 {duration(data.wait_p95)}, run time p95 {duration(data.run_p95)} "
        f"over the last {data.window}"
    )
    title = f"95th percentile queue wait and run time, last {data.window}"
    return _frame(title, summary, "".join(lines), duration(peak), labels)
