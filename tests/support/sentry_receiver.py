"""A stand-in for Sentry's ingestion endpoint: keeps the events sentry-sdk sends it."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class SentryReceiver:
    """An HTTP server on a free local port; ``dsn`` points sentry-sdk at it and
    ``events`` are the events of the envelopes it has received, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding:
                    raise AssertionError(f"unexpected Content-Encoding {encoding!r}")
                if self.path.rstrip("/").endswith("/envelope"):
                    receiver._keep(envelope_events(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Quiet: pytest shows what the assertions say.

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self._server.server_address[1]
        self.dsn = f"http://publickey@127.0.0.1:{port}/1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _keep(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.events.extend(events)

    def events_of(self, job_id: str) -> list[dict[str, Any]]:
        """The events tagged with ``job_id``."""
        with self._lock:
            return [e for e in self.events if tags(e).get("job_id") == job_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SentryReceiver:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def envelope_events(body: bytes) -> list[dict[str, Any]]:
    """The ``event`` items of a Sentry envelope: a header line, then for each item a
    header line and its payload (``length`` bytes, or up to the next newline)."""
    events: list[dict[str, Any]] = []
    _envelope_header, _, rest = body.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        if header.get("type") == "event":
            events.append(json.loads(payload))
    return events


def tags(event: dict[str, Any]) -> dict[str, str]:
    """An event's tags, whichever of Sentry's two shapes (mapping or pairs) it has."""
    raw = event.get("tags") or {}
    return dict(raw) if isinstance(raw, dict) else {key: value for key, value in raw}
