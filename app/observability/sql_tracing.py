"""SQL spans, only for the statements of a traced request, submission or attempt.

Every process also runs SQL in the background (the group committer's batches of many
jobs' starts and outcomes, the relay, heartbeats, the API's event-stream polls). Those
statements belong to no single trace, and the instrumentation's own work for each of them
(reading the connection's attributes, naming the operation, asking the sampler) cost
0.12 ms of CPU per statement even when the sampler dropped the span (measured on a
PostgreSQL ``SELECT 1``): about a third of what tracing cost a worker per job. Outside a
recording span, a statement is now left alone at the cost of one context lookup.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Tracer
from sqlalchemy import Engine


def trace_sql(tracer: Tracer, engine: Engine) -> None:
    """Spans from ``tracer`` for ``engine``'s statements run inside a recording span."""
    # jobstack's metrics are Prometheus's: the connection-usage counter goes nowhere.
    usage = NoOpMeterProvider().get_meter(__name__).create_up_down_counter("unused")
    SqlInSpans(tracer, engine, usage)  # type: ignore[no-untyped-call]


class SqlInSpans(EngineTracer):
    """The SQLAlchemy instrumentation's engine tracer, skipping statements that run
    outside any recording span."""

    def _before_cur_exec(
        self,
        conn: Any,
        cursor: Any,
        statement: Any,
        params: Any,
        context: Any,
        executemany: bool,
    ) -> tuple[Any, Any]:
        if not trace.get_current_span().is_recording():
            return statement, params
        result: tuple[Any, Any] = super()._before_cur_exec(  # type: ignore[no-untyped-call]
            conn, cursor, statement, params, context, executemany
        )
        return result
