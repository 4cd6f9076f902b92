"""Request bodies are read on the event loop, within limits, before a view thread sees them.

A client that sends its body a byte at a time then costs a coroutine, not a view thread.
Whatever the method and path, before a byte of a body is read: a request without a valid
token or dashboard session gets 401 (no endpoint takes a body from anonymous callers but
the dashboard's sign-in form, up to :data:`SIGN_IN_MAX_BYTES`), one that frames its body
both with Content-Length and Transfer-Encoding gets 400, one whose Content-Length is over
its limit gets 413; a body that takes longer than the body timeout gets 408. The view then
sees the body with its real Content-Length (a chunked body is de-chunked here). Bodies up to
:data:`IN_MEMORY` bytes stay in memory, larger ones (uploads) are spooled to a file.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO

from api.auth import MISSING_TOKEN, UNKNOWN_TOKEN, bearer_token
from api.errors import error_body
from api.serving.types import ASGIApp, Message, Receive, Scope, Send

IN_MEMORY = 1 << 20
CHUNK = 1 << 16
#: The one path that takes a body without credentials (an API token, in a form), and how
#: large that body may be.
SIGN_IN_PATH = "/sign-in"
SIGN_IN_MAX_BYTES = 4096

#: Whether a token is valid (run off the event loop: it may query the database).
TokenCheck = Callable[[str], Awaitable[bool]]
#: Whether a request's Cookie header holds a valid dashboard session (likewise).
SessionCheck = Callable[[str], Awaitable[bool]]
#: The largest body accepted for a method and path.
BodyLimit = Callable[[str, str], int]


class _TooLarge(Exception):
    pass


class BufferedBodies:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: BodyLimit,
        token_is_valid: TokenCheck,
        body_timeout: float,
        session_is_valid: SessionCheck | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.token_is_valid = token_is_valid
        self.session_is_valid = session_is_valid
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        length_header = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        if chunked and length_header is not None:
            # Two framings: a proxy and this server could disagree on where the body ends
            # (request smuggling). RFC 9112 lets a server refuse such a request.
            await _answer(send, 400, "send Content-Length or Transfer-Encoding, not both")
            return
        if (length_header is None or length_header.strip() == b"0") and not chunked:
            await self.app(scope, receive, send)  # No body.
            return
        limit = self.limit(scope["method"], scope["path"])
        if scope["path"] == SIGN_IN_PATH:
            limit = min(limit, SIGN_IN_MAX_BYTES)
        elif not await self._has_credentials(scope["path"], headers):
            token = bearer_token(headers.get("authorization", b"").decode("latin-1"))
            message = MISSING_TOKEN if token is None else UNKNOWN_TOKEN
            await _answer(send, 401, message, {"www-authenticate": 'Bearer realm="jobstack"'})
            return
        try:
            declared = int(length_header) if length_header is not None else 0
        except ValueError:
            await _answer(send, 400, "Content-Length is not a number")
            return
        if declared > limit:
            await _answer(send, 413, f"the body is over this endpoint's limit of {limit} bytes")
            return
        with tempfile.SpooledTemporaryFile(max_size=IN_MEMORY) as body:
            try:
                size = await asyncio.wait_for(_read_body(receive, body, limit), self.body_timeout)
            except TimeoutError:
                await _answer(
                    send, 408, f"the body did not arrive within {self.body_timeout:g} seconds"
                )
                return
            except _TooLarge:
                await _answer(send, 413, f"the body is over this endpoint's limit of {limit} bytes")
                return
            if size is None:
                return  # The client went away.
            body.seek(0)
            framed = [
                (name, value)
                for name, value in scope["headers"]
                if name.lower() not in (b"content-length", b"transfer-encoding")
            ]
            framed.append((b"content-length", str(size).encode()))
            await self.app({**scope, "headers": framed}, _replay(body, size, receive), send)

    async def _has_credentials(self, path: str, headers: dict[str, bytes]) -> bool:
        """A valid API token; or, outside the REST API (``/v1/``), a dashboard session."""
        token = bearer_token(headers.get("authorization", b"").decode("latin-1"))
        if token is not None:
            return await self.token_is_valid(token)
        cookies = headers.get("cookie")
        if self.session_is_valid is None or cookies is None or path.startswith("/v1/"):
            return False
        return await self.session_is_valid(cookies.decode("latin-1"))


async def _read_body(receive: Receive, into: IO[bytes], limit: int) -> int | None:
    """Read the whole body into ``into``: its size, or None if the client went away."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        into.write(chunk)
        if not message.get("more_body", False):
            return size


def _replay(body: IO[bytes], size: int, receive: Receive) -> Receive:
    """A receive that gives the stored body, then waits on the client (for disconnects)."""
    finished = False

    async def replay() -> Message:
        nonlocal finished
        if finished:
            return await receive()
        chunk = body.read(CHUNK)
        more = body.tell() < size
        finished = not more
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replay


async def _answer(send: Send, code: int, message: str, extra: dict[str, str] | None = None) -> None:
    payload = json.dumps(error_body(code, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    headers += [(name.encode(), value.encode()) for name, value in (extra or {}).items()]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
