"""An OTLP/HTTP trace receiver in the test process: what an OpenTelemetry Collector or
Jaeger would receive, decoded from ``ExportTraceServiceRequest`` protobufs."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.proto.trace.v1.trace_pb2 import Status as StatusProto

KINDS = {value: name.removeprefix("SPAN_KIND_") for name, value in SpanProto.SpanKind.items()}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    events: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.service}: {self.kind} {self.name!r} span={self.span_id} "
            f"parent={self.parent_id} status={self.status} {self.attributes}"
        )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """Collects every span posted to ``endpoint`` + ``/v1/traces``."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self, request: ExportTraceServiceRequest) -> None:
        taken: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    taken.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=KINDS[span.kind],
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            service=str(resource.get("service.name")),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=StatusProto.StatusCode.Name(span.status.code).removeprefix(
                                "STATUS_CODE_"
                            ),
                            events=[event.name for event in span.events],
                        )
                    )
        with self._lock:
            self.spans.extend(taken)

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def trace_of(self, job_id: str, operation: str = "process") -> list[ReceivedSpan]:
        """Every span of the trace holding ``job_id``'s ``operation`` span (empty until
        it has arrived)."""
        spans = self.received()
        trace_ids = {
            span.trace_id
            for span in spans
            if span.attributes.get("messaging.message.id") == job_id
            and span.attributes.get("messaging.operation.name") == operation
        }
        return [span for span in spans if span.trace_id in trace_ids]

    def environment(self) -> dict[str, str]:
        """The standard OTEL_* variables that send a process's spans here, quickly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    @contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def print_trace(spans: list[ReceivedSpan]) -> str:
    """The spans as a tree, parents first (for failure messages and the docs)."""
    by_parent: dict[str | None, list[ReceivedSpan]] = {}
    ids = {span.span_id for span in spans}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in by_parent.get(parent, []):
            lines.append("  " * depth + str(span))
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
