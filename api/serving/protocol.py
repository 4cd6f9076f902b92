"""uvicorn's HTTP/1.1 protocol with a deadline on request headers.

uvicorn waits for a request's headers for as long as the client keeps the socket open. That
costs a coroutine, not a thread, but sockets are finite: a client has
``JOBSTACK_API_HEADER_TIMEOUT`` seconds from connecting (or from the end of its previous
response) to send a complete request head, then its connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import load_settings


class HeaderDeadlineProtocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = load_settings().api_header_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._disarm()  # A request head arrived.

    def on_response_complete(self) -> None:
        # The next request on this connection gets the same deadline. Armed first: uvicorn
        # starts a pipelined request inside on_response_complete, and handle_events then
        # disarms it as soon as that request's head is in.
        if not self.transport.is_closing():
            self._arm()
        super().on_response_complete()
