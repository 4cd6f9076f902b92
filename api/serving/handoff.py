"""Streams handed over by Flask views are written by the event loop.

A view that opens a stream (:mod:`api.events`) answers with the stream's headers and an
internal ``X-Jobstack-Stream`` header naming what to follow. This middleware removes that
header, lets the view's thread go, and writes the stream itself: events as the hub
delivers them, a keep-alive comment when idle, until the job has finished, the stream's
time is up, its token is revoked or its client has gone. A dashboard page's stream
(``"kind": "page"``) is written by :mod:`api.serving.page_streams` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from api.serving.hub import Event, StreamHub, Subscription
from api.serving.page_streams import stream_page
from api.serving.types import ASGIApp, Message, Receive, Scope, Send
from app.models import ADMIN_ONLY_JOB_FIELDS

STREAM_HEADER = "X-Jobstack-Stream"
KEEPALIVE_SECONDS = 15.0
RETRY = b"retry: 3000\n\n"
KEEPALIVE = b": keep-alive\n\n"


def stream_header(
    job_id: str, token_id: str, slot: str, after: int, max_seconds: float, *, admin: bool
) -> str:
    """The header value a view answers with to hand its stream over."""
    return json.dumps(
        {
            "job": job_id,
            "token": token_id,
            "slot": slot,
            "after": after,
            "max": max_seconds,
            "admin": admin,
        }
    )


def frame(event: Event, *, admin: bool) -> bytes:
    body = event.body
    if not admin and body.get("data"):
        # A start's event names the worker (hostname:pid): a platform detail.
        data = {k: v for k, v in body["data"].items() if k not in ADMIN_ONLY_JOB_FIELDS}
        body = {**body, "data": data}
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {json.dumps(body)}\n\n".encode()


class StreamHandoff:
    def __init__(self, app: ASGIApp, hub: StreamHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handoff: dict[str, Any] | None = None
        wanted = STREAM_HEADER.lower().encode()

        async def intercept(message: Message) -> None:
            nonlocal handoff
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                for name, value in headers:
                    if name.lower() == wanted:
                        handoff = json.loads(value)
                if handoff is not None:
                    # The view's Content-Length (0) described its empty body, not the stream.
                    dropped = (wanted, b"content-length")
                    headers = [(n, v) for n, v in headers if n.lower() not in dropped]
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and handoff is not None:
                return  # The view's empty body: the stream follows.
            await send(message)

        await self.app(scope, receive, intercept)
        if handoff is not None and handoff.get("kind") == "page":
            await stream_page(self.app, scope, handoff, receive, send)
        elif handoff is not None:
            await self._stream(handoff, receive, send)

    async def _stream(self, handoff: dict[str, Any], receive: Receive, send: Send) -> None:
        subscription = self.hub.subscribe(
            handoff["job"], handoff["token"], handoff["slot"], int(handoff["after"])
        )
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            # Sends the headers now, and tells EventSource clients when to reconnect.
            await send({"type": "http.response.body", "body": RETRY, "more_body": True})
            writing = self._write(subscription, gone, send, admin=bool(handoff.get("admin")))
            await asyncio.wait_for(writing, handoff["max"])
        except TimeoutError:
            pass  # Time is up: the client reconnects with Last-Event-ID.
        except OSError:
            pass  # The client went away while we wrote.
        finally:
            gone.cancel()
            await self.hub.unsubscribe(subscription)
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _write(
        subscription: Subscription, gone: asyncio.Future[None], send: Send, *, admin: bool
    ) -> None:
        inbox: asyncio.Future[list[Event] | str] | None = None
        try:
            while True:
                inbox = asyncio.ensure_future(subscription.inbox.get())
                waiting: set[asyncio.Future[Any]] = {inbox, gone}
                done, _ = await asyncio.wait(
                    waiting, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    return
                if not done:
                    inbox.cancel()
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    continue
                item = inbox.result()
                if isinstance(item, str):
                    return  # Ended: the job finished, was deleted, or the token was revoked.
                body = b"".join(frame(event, admin=admin) for event in item)
                # Waits while the client does not read (uvicorn's flow control): the hub
                # then stops filling this stream's inbox.
                await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            # Also when the stream's time is up and this coroutine is cancelled.
            if inbox is not None and not inbox.done():
                inbox.cancel()


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has closed its connection."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
