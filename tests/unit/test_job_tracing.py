"""The tracing middleware's producer side: which messages start a trace, and that no
copy of a message (a retry, sent twice by Dramatiq) ever replaces its job's context."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from app.observability import tracing
from app.observability.job_tracing import JobTracing
from app.observability.sampling import without_background_sql


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=without_background_sql(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "ENABLED", True)
    monkeypatch.setattr(tracing, "_provider", provider)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer(tracing.TRACER_NAME))
    monkeypatch.setattr(tracing, "_started_pid", os.getpid())
    yield exporter
    provider.shutdown()


def _tick(queue: str = "default") -> Message[Any]:
    return Message(
        queue_name=queue, actor_name="maintenance.prune_jobs", args=(), kwargs={}, options={}
    )


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_a_message_sent_outside_any_span_starts_a_trace_of_its_own(
    spans: InMemorySpanExporter,
) -> None:
    middleware, broker, tick = JobTracing(), StubBroker(), _tick()
    middleware.before_enqueue(broker, tick, None)
    middleware.after_enqueue(broker, tick, None)

    (create,) = _named(spans, "create default")
    (send,) = _named(spans, "send default")
    assert create.parent is None and create.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == create.context.span_id
    assert tick.options[tracing.TRACE_OPTION]["traceparent"].split("-")[1] == format(
        create.context.trace_id, "032x"
    )


def test_copies_of_a_message_keep_the_context_of_its_creation(
    spans: InMemorySpanExporter,
) -> None:
    middleware, broker, original = JobTracing(), StubBroker(), _tick()
    middleware.before_enqueue(broker, original, None)
    middleware.after_enqueue(broker, original, None)
    created = dict(original.options[tracing.TRACE_OPTION])
    # A retry as Dramatiq sends it: to the delay queue, then to the queue itself.
    for copy in (
        original.copy(queue_name="default.DQ", options={"eta": 1, "retries": 1}),
        original.copy(options={"retries": 1}),
    ):
        middleware.before_enqueue(broker, copy, 1000)
        middleware.after_enqueue(broker, copy, 1000)
        assert copy.options[tracing.TRACE_OPTION] == created

    assert len(_named(spans, "create default")) == 1
    create = _named(spans, "create default")[0]
    sends = _named(spans, "send default")
    assert len(sends) == 3
    assert {span.parent.span_id for span in sends if span.parent} == {create.context.span_id}
    retries = sends[1:]
    assert all(span.attributes and span.attributes["jobstack.delayed"] for span in retries)


def test_sql_outside_any_span_is_not_recorded_but_sql_inside_one_is(
    spans: InMemorySpanExporter,
) -> None:
    tracer = tracing.tracer()
    with tracer.start_as_current_span("poll", kind=SpanKind.CLIENT):
        pass  # A background thread's query: no parent.
    with (
        tracer.start_as_current_span("process default", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("SELECT jobs", kind=SpanKind.CLIENT),
    ):
        pass
    names = [span.name for span in spans.get_finished_spans()]
    assert names == ["SELECT jobs", "process default"]


def test_with_tracing_off_nothing_is_added_to_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.config import Settings
    from app.observability import tracing_middleware

    monkeypatch.setattr(tracing, "ENABLED", False)
    assert tracing_middleware(Settings()) == []
    with tracing.creation_span("default", "job-1", "diagnostics.echo", None) as context:
        assert context is None  # Nothing stored with the job.
    assert tracing.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.tracing_configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.tracing_configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.tracing_configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )


def test_a_publish_tried_again_ends_the_span_of_the_failed_try(
    spans: InMemorySpanExporter,
) -> None:
    middleware, broker, message = JobTracing(), StubBroker(), _tick()
    # Dramatiq's RabbitMQ enqueue emits before_enqueue again when it retries after a
    # lost connection; only the second try is confirmed.
    middleware.before_enqueue(broker, message, None)
    middleware.before_enqueue(broker, message, None)
    middleware.after_enqueue(broker, message, None)

    sends = _named(spans, "send default")
    assert [span.status.status_code.name for span in sends] == ["ERROR", "UNSET"]


def test_an_attempt_that_never_started_has_no_attempt_number(
    spans: InMemorySpanExporter,
) -> None:
    from dramatiq.broker import MessageProxy

    from app.messages import ATTEMPTS_OPTION

    middleware, broker = JobTracing(), StubBroker()
    started = MessageProxy(_tick().copy(options={ATTEMPTS_OPTION: 1}))
    middleware.before_process_message(broker, started)
    started.options[ATTEMPTS_OPTION] = 2  # What Tracking does when it starts attempt 2.
    middleware.after_process_message(broker, started, result=None)
    unstarted = MessageProxy(_tick().copy(options={ATTEMPTS_OPTION: 1}))
    middleware.before_process_message(broker, unstarted)
    # The database was unreachable: Tracking started nothing.
    middleware.after_process_message(broker, unstarted, exception=RuntimeError("db down"))

    first, second = _named(spans, "process default")
    assert first.attributes and first.attributes["jobstack.attempt"] == 2
    assert second.attributes and "jobstack.attempt" not in second.attributes


def test_sql_is_traced_inside_a_span_and_left_alone_outside_one(
    spans: InMemorySpanExporter,
) -> None:
    from sqlalchemy import create_engine, text

    from app.observability.sql_tracing import trace_sql

    engine = create_engine("sqlite://")
    trace_sql(tracing.tracer(), engine)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))  # A background thread's statement.
            with tracing.tracer().start_as_current_span("process default"):
                connection.execute(text("SELECT 2"))
    finally:
        engine.dispose()  # Python 3.13 warns of a connection left to the collector.

    finished = spans.get_finished_spans()
    sql = [span for span in finished if span.kind is SpanKind.CLIENT]
    assert len(sql) == 1
    assert sql[0].attributes and sql[0].attributes["db.statement"] == "SELECT 2"
    (process,) = _named(spans, "process default")
    assert sql[0].parent is not None and sql[0].parent.span_id == process.context.span_id
