"""Live dashboard pages: the event loop re-renders a page's live part through the Flask
app every few seconds and sends it to the browser when it changed.

A page stream is handed over like a job's event stream (:mod:`api.serving.handoff`): the
view checks the session and names the fragment to follow; the loop then asks the app for
that fragment with the browser's own cookies, so every render is authorized again (a
signed-out or revoked session ends the stream with ``event: end``), and holds no view
thread between renders.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from api.serving.types import ASGIApp, Message, Receive, Scope, Send

RETRY = b"retry: 3000\n\n"
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_SECONDS = 15.0
#: Page streams one token may hold open in one API process (a few tabs); more are ended.
PER_TOKEN = 12
#: Largest fragment sent; a larger one ends the stream (the page still works on reload).
MAX_FRAGMENT_BYTES = 2 << 20

_open: Counter[str] = Counter()


def render_frame(html: bytes) -> bytes:
    lines = html.decode("utf-8", "replace").replace("\r", "").split("\n")
    return ("event: render\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


def end_frame(reason: str) -> bytes:
    return f"event: end\ndata: {reason}\n\n".encode()


async def _render(app: ASGIApp, scope: Scope, source: str) -> tuple[int, bytes]:
    """GET ``source`` from ``app`` with the stream's own headers (its cookies)."""
    path, _, query = source.partition("?")
    headers = [(n, v) for n, v in scope["headers"] if n.lower() not in (b"content-length",)]
    inner = {
        **scope,
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode("latin-1"),
        "headers": headers,
    }
    status, chunks, asked = 500, [], False

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # Never: the fragment has no client to lose.
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(inner, receive, send)
    return status, b"".join(chunks)


async def stream_page(
    app: ASGIApp, scope: Scope, handoff: dict[str, Any], receive: Receive, send: Send
) -> None:
    token = str(handoff["token"])
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await send({"type": "http.response.body", "body": RETRY, "more_body": True})
        if _open[token] >= PER_TOKEN:
            await send({"type": "http.response.body", "body": end_frame("429"), "more_body": True})
            return
        _open[token] += 1
        try:
            follow = _follow(app, scope, handoff, gone, send)
            await asyncio.wait_for(follow, float(handoff["max"]))
        finally:
            _open[token] -= 1
            if _open[token] <= 0:
                del _open[token]
    except TimeoutError:
        pass  # Time is up: EventSource reconnects and the page goes on.
    except OSError:
        pass  # The client went away while we wrote.
    finally:
        gone.cancel()
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _follow(
    app: ASGIApp, scope: Scope, handoff: dict[str, Any], gone: asyncio.Future[None], send: Send
) -> None:
    last: bytes | None = None
    quiet = 0.0
    interval = float(handoff["interval"])
    while not gone.done():
        status, body = await _render(app, scope, str(handoff["src"]))
        if status != 200 or len(body) > MAX_FRAGMENT_BYTES:
            reason = str(status) if status != 200 else "413"
            await send({"type": "http.response.body", "body": end_frame(reason), "more_body": True})
            return
        if body != last:
            await send(
                {"type": "http.response.body", "body": render_frame(body), "more_body": True}
            )
            last, quiet = body, 0.0
        elif quiet >= KEEPALIVE_SECONDS:
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            quiet = 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gone), interval)
        quiet += interval


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
