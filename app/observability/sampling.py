"""Which spans are recorded: those the configured sampler keeps, but never the SQL of
background threads.

Every jobstack process polls its database in the background (the relay each second, the
API's event streams every 250 ms, heartbeats, cancellation checks, the group committer's
batches of many jobs). Traced, each poll would be a trace of its own, a flood in which
the jobs' traces drown. A CLIENT span with no parent is such a poll (the SQLAlchemy
instrumentation names its attributes only after the sampler has decided, so the kind
is what tells): it is dropped. SQL inside a request, a job's submission or an attempt
has a parent and is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes


class WithoutBackgroundSql(Sampler):
    """Drops root CLIENT spans; asks ``delegate`` about every other span."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        has_parent = trace.get_current_span(parent_context).get_span_context().is_valid
        if not has_parent and kind is trace.SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"WithoutBackgroundSql{{{self._delegate.get_description()}}}"


def without_background_sql(delegate: Sampler) -> Sampler:
    return WithoutBackgroundSql(delegate)
