"""One access line per request, as gunicorn writes them, on the ``gunicorn.access`` logger:
``127.0.0.1 "POST /v1/jobs HTTP/1.1" 202 312 4ms correlation_id=…`` (the response's
X-Correlation-ID, to follow a request into the worker's log lines of its job)."""

from __future__ import annotations

import logging
import time

from api.serving.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("gunicorn.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status, size, correlation = 0, 0, "-"

        async def observe(message: Message) -> None:
            nonlocal status, size, correlation
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-correlation-id":
                        correlation = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            client = (scope.get("client") or ("-", 0))[0]
            target = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            milliseconds = int((time.monotonic() - started) * 1000)
            logger.info(
                '%s "%s %s HTTP/%s" %s %s %sms correlation_id=%s',
                client,
                scope["method"],
                target,
                scope.get("http_version", "1.1"),
                status or "-",
                size,
                milliseconds,
                correlation,
            )
