"""``create_asgi_app()``: the Flask API behind the event-loop layers that keep slow clients
and open streams off its threads.

From the socket inwards: :class:`~api.serving.access_log.AccessLog`, then
:class:`~api.serving.bodies.BufferedBodies` (whole bodies before a thread, early 401/413/408),
then :class:`~api.serving.handoff.StreamHandoff` (event streams written by the loop), then
a2wsgi's bridge running Flask on ``JOBSTACK_API_THREADS`` threads.
"""

from __future__ import annotations

import asyncio

from a2wsgi import WSGIMiddleware
from flask import Flask
from werkzeug.exceptions import HTTPException

from api import UPLOAD_ENDPOINTS, create_app
from api.dashboard.session import session_principal
from api.serving.access_log import AccessLog
from api.serving.bodies import BufferedBodies
from api.serving.handoff import StreamHandoff
from api.serving.hub import StreamHub
from api.serving.types import ASGIApp
from app.config import load_settings
from app.tokens import authenticate, recently_verified


def create_asgi_app(flask_app: Flask | None = None) -> ASGIApp:
    settings = load_settings()
    flask_app = flask_app or create_app()
    routes = flask_app.url_map.bind("localhost")

    def limit(method: str, path: str) -> int:
        try:
            endpoint, _ = routes.match(path, method=method)
        except HTTPException:
            return settings.api_max_body_bytes  # Flask answers 404/405 itself.
        if endpoint in UPLOAD_ENDPOINTS:
            return settings.upload_max_bytes
        return settings.api_max_body_bytes

    async def token_is_valid(token: str) -> bool:
        # A token this process verified lately is answered from memory on the loop: the hop
        # to a thread and back (two GIL hand-overs against busy view threads) is for the
        # database lookup only.
        if recently_verified(token) is not None:
            return True
        return await asyncio.to_thread(authenticate, token) is not None

    async def session_is_valid(cookies: str) -> bool:
        found = await asyncio.to_thread(session_principal, flask_app, cookies)
        return found is not None

    wsgi = WSGIMiddleware(flask_app, workers=settings.api_threads)  # type: ignore[arg-type]
    return AccessLog(
        BufferedBodies(
            StreamHandoff(wsgi, StreamHub()),  # type: ignore[arg-type]
            limit=limit,
            token_is_valid=token_is_valid,
            body_timeout=settings.api_body_timeout,
            session_is_valid=session_is_valid,
        )
    )
