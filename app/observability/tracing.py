"""OpenTelemetry: each process's tracer provider, and the trace context a job carries.

Tracing is on when the environment configures an exporter the OpenTelemetry way:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, or
``OTEL_TRACES_EXPORTER`` set to ``otlp`` or ``console``; ``OTEL_SDK_DISABLED=true`` wins.
Everything else (service name, resource attributes, sampler, headers, timeouts, batch
sizes, propagators) is read by the OpenTelemetry SDK itself from its ``OTEL_*`` variables.

Off, nothing here imports the SDK and every helper returns at its first line.

A job's trace context is created once, by the ``create`` span of its submission, and
stored with its row (``jobs.trace_context``) and in its messages (the option
:data:`TRACE_OPTION`): the relay, retries, re-drives and manual retries all build or copy
messages from those, so every attempt continues the one trace.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy import Engine

logger = logging.getLogger(__name__)

#: Message option holding the job's creation context (W3C ``traceparent`` & co).
TRACE_OPTION = "trace_context"

#: API paths whose requests are not traced unless OTEL_PYTHON_FLASK_EXCLUDED_URLS says
#: otherwise (comma-separated regular expressions, as that variable takes).
UNTRACED_API_PATHS = "healthz,readyz,metrics"

#: Instrumentation scope of jobstack's own spans.
TRACER_NAME = "jobstack"

_lock = threading.Lock()
#: The process (pid) whose provider is running, and that provider.
_started_pid = 0
_provider: TracerProvider | None = None
#: jobstack's tracer from that provider (asking the provider for it costs a lock and a
#: deprecation check per call: a fifth of a message's tracing time, measured).
_tracer: Tracer | None = None


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` environment asks for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


#: Read once: the environment that starts a process decides for all of it.
ENABLED = tracing_configured()


def start_tracing(role: str) -> bool:
    """Start this process's tracer provider, once per process (a forked child starts its
    own: the parent's exporter thread did not survive the fork). ``role`` names the
    service when ``OTEL_SERVICE_NAME`` does not (``jobstack-api``, ``jobstack-worker``).
    Returns whether tracing is on."""
    global _started_pid, _provider, _tracer
    if not ENABLED:
        return False
    if _started_pid == os.getpid():
        return True
    with _lock:
        if _started_pid == os.getpid():
            return True
        _provider = _new_provider(role)
        _tracer = _provider.get_tracer(TRACER_NAME)
        _started_pid = os.getpid()
    return True


def _new_provider(role: str) -> TracerProvider:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes[SERVICE_NAME] = f"jobstack-{role}"
    # The sampler OTEL_TRACES_SAMPLER(_ARG) asks for (a provider reads them when built),
    # minus the SQL of background threads; the exporter reads its OTEL_EXPORTER_OTLP_*.
    from app.observability.sampling import without_background_sql

    configured = TracerProvider(shutdown_on_exit=False).sampler
    provider = TracerProvider(
        resource=Resource.create(attributes), sampler=without_background_sql(configured)
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        # Inherited from a parent that traced before forking: this process's own provider
        # serves jobstack's spans and the instrumentations (they are given it).
        logger.debug("A tracer provider was inherited; using this process's own.")
    else:
        trace.set_tracer_provider(provider)
    _instrument_sqlalchemy(provider)
    return provider


def _exporter() -> Any:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        logger.warning("OTEL_TRACES_EXPORTER=%s is not supported; using otlp.", kind)
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol != "http/protobuf":
        # Only the HTTP exporter is installed (the gRPC one pulls in grpcio).
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: exporting with http/protobuf.", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument_sqlalchemy(provider: TracerProvider) -> None:
    """SQL spans for the process's engine, and for any engine built later.

    Engine by engine (the instrumentation's EngineTracer), not by patching
    ``create_engine`` as its instrumentor does: that also patches SQLAlchemy's asyncio
    module, which needs greenlet, and refuses SQLAlchemy 2.1, whose engine events it
    uses are unchanged (the tests check that SQL spans arrive).
    """
    from opentelemetry.instrumentation.sqlalchemy.version import __version__

    from app import db
    from app.observability.sql_tracing import trace_sql

    sql_tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)

    def trace_engine(engine: Engine) -> None:
        trace_sql(sql_tracer, engine)

    # A provider made again in a forked child replaces its parent's hook, not adds one.
    db.engine_hooks[:] = [hook for hook in db.engine_hooks if hook.__name__ != "trace_engine"]
    db.engine_hooks.append(trace_engine)
    engine = db.current_engine()
    if engine is not None:
        trace_engine(engine)


def stop_tracing() -> None:
    """Export what is buffered and stop (a worker's shutdown; atexit does it otherwise)."""
    if _provider is not None and _started_pid == os.getpid():
        _provider.force_flush()
        _provider.shutdown()


def process_role() -> str:
    """Names the service of a process that did not start tracing itself (the scheduler,
    the CLI)."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program == "__main__.py":
        # python -m dramatiq (as jobstack up starts the workers), python -m app.cli
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        program = {"dramatiq.__main__": "dramatiq", "app.cli.__main__": "jobstack"}.get(
            spec.name if spec else "", program
        )
    return {"periodiq": "scheduler", "dramatiq": "worker", "jobstack": "cli"}.get(program, "app")


def tracer() -> Tracer:
    assert _tracer is not None, "start_tracing() first"
    return _tracer


def tracing_active() -> bool:
    """Whether this process traces now (started, and not in a fork that has not)."""
    return _started_pid == os.getpid()


# The job's trace context ---------------------------------------------------------------


@contextmanager
def creation_span(
    queue: str, job_id: str, actor: str, correlation_id: str | None
) -> Iterator[dict[str, str] | None]:
    """A PRODUCER span ``create <queue>`` around a job's submission; yields the context
    to store with the job (None when tracing is off)."""
    if not ENABLED or not start_tracing(process_role()):
        yield None
        return
    from opentelemetry import propagate, trace

    with tracer().start_as_current_span(
        f"create {queue}",
        kind=trace.SpanKind.PRODUCER,
        attributes=_message_attributes(queue, job_id, actor, correlation_id, "create"),
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier


def note_existing_job(job_id: str) -> None:
    """On the current ``create`` span: the submission returned this existing job (its
    idempotency or unique key) instead of creating one."""
    if not ENABLED or not tracing_active():
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute("jobstack.existing_job", job_id)


def start_creation(message_options: dict[str, Any], queue: str, job_id: str, actor: str) -> None:
    """For a message sent without a submission (``actor.send()``, a cron tick): a
    ``create`` span now, its context in the message's options. A cron tick has no span
    around it, so its job starts a trace of its own."""
    from opentelemetry import propagate, trace

    correlation_id = message_options.get("correlation_id")
    with tracer().start_as_current_span(
        f"create {queue}",
        kind=trace.SpanKind.PRODUCER,
        attributes=_message_attributes(queue, job_id, actor, correlation_id, "create"),
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    message_options[TRACE_OPTION] = carrier


def job_context(carrier: Mapping[str, str] | None) -> Context | None:
    """The job's creation context, from what :func:`creation_span` stored."""
    if not carrier:
        return None
    from opentelemetry import propagate

    return propagate.extract(dict(carrier))


def start_message_span(
    operation: str,
    kind_name: str,
    queue: str,
    job_id: str,
    actor: str,
    correlation_id: str | None,
    carrier: Mapping[str, str] | None,
) -> Span:
    """A started ``<operation> <queue>`` span whose parent is the job's creation context
    (or the current one when the message carries none)."""
    from opentelemetry import trace

    return tracer().start_span(
        f"{operation} {queue}",
        context=job_context(carrier),
        kind=getattr(trace.SpanKind, kind_name),
        attributes=_message_attributes(queue, job_id, actor, correlation_id, operation),
    )


def _message_attributes(
    queue: str, job_id: str, actor: str, correlation_id: str | None, operation: str
) -> dict[str, Any]:
    """The OpenTelemetry messaging conventions' attributes, and jobstack's own."""
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "jobstack.actor": actor,
    }
    if correlation_id:
        attributes["messaging.message.conversation_id"] = correlation_id
    return attributes


def current_ids() -> tuple[str, str] | None:
    """The (trace id, span id) in hex of the span active in this thread, if any."""
    if not ENABLED or not tracing_active():
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# The API ---------------------------------------------------------------------------------


def instrument_api(app: Flask) -> None:
    """Spans for the API's requests (Flask) and SQL; the correlation id on each request
    span and in the baggage that travels with the job."""
    if not start_tracing("api"):
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    # Probes and scrapes would be a trace every few seconds each, SQL included; the
    # standard variable still decides when it is set.
    excluded = os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS", UNTRACED_API_PATHS)
    FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
        app, tracer_provider=_provider, excluded_urls=excluded
    )
    from app.observability.request_tracing import tag_requests

    tag_requests(app)
