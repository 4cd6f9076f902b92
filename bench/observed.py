"""What observability costs: the environment that turns traces and metrics on in a worker,
with a sink that takes the spans as a collector would and throws them away.

The sink answers every OTLP/HTTP export with 200 without decoding it, so the bench
process takes as little CPU from the worker as it can; the worker pays for building,
batching, encoding and sending every span, and for counting every metric.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def observability_on(work: Path, metrics_port: int) -> Iterator[dict[str, str]]:
    """The worker environment with traces (to a sink) and metrics on."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
            "JOBSTACK_METRICS_ENABLED": "true",
            "JOBSTACK_METRICS_PORT": str(metrics_port),
            "JOBSTACK_METRICS_DIR": str(work / "metrics"),
        }
    finally:
        server.shutdown()
        server.server_close()


#: The variants compared with observability off: everything on, and the same with one
#: trace in ten kept (OpenTelemetry's own sampler setting).
VARIANTS = {
    "traces+metrics": {},
    "traces 10%+metrics": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
}


def compare(
    total: int,
    processes: int,
    threads: int,
    work: Path,
    *,
    first_off: dict[str, Any],
    rounds: int,
    metrics_port: int,
) -> dict[str, Any]:
    """jobstack on PostgreSQL with observability off and in each of :data:`VARIANTS`, in
    turn, ``rounds`` times (``first_off`` is the first "off" run): medians of the drain
    rate and of the worker's CPU per job. On a shared 2-core machine one run can differ
    from the next by 30 % either way; the CPU per job moves less."""
    from bench import drain

    runs: dict[str, list[dict[str, Any]]] = {"off": [first_off]}
    with observability_on(work, metrics_port) as environment:
        for index in range(rounds):
            if index > 0:
                runs["off"].append(drain.jobstack("postgres", total, processes, threads, work))
            for label, extra in VARIANTS.items():
                runs.setdefault(label, []).append(
                    drain.jobstack(
                        "postgres",
                        total,
                        processes,
                        threads,
                        work,
                        worker_env={**environment, **extra},
                        label=label,
                    )
                )
    rates = {label: [row["per_second"] for row in rows] for label, rows in runs.items()}
    cpus = {label: [row["worker_cpu_ms_per_job"] for row in rows] for label, rows in runs.items()}
    off_rate, off_cpu = statistics.median(rates["off"]), statistics.median(cpus["off"])
    return {
        "per_second": rates,
        "cpu_ms_per_job": cpus,
        "slowdown": {label: 1 - statistics.median(rates[label]) / off_rate for label in VARIANTS},
        "cpu_increase": {label: statistics.median(cpus[label]) / off_cpu - 1 for label in VARIANTS},
        "first_on": runs["traces+metrics"][0],
    }
