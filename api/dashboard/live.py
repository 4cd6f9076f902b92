"""``/live``: the event stream of a dashboard page. The view checks the session and what is
followed, then hands the stream to the event loop (:mod:`api.serving.page_streams`)."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, request

from api.dashboard.access import operator, refusal, viewer
from api.dashboard.pages import PAGES, bp
from api.serving.handoff import STREAM_HEADER
from app.config import load_settings

#: Longest fragment address followed (a page's filters fit well within it).
MAX_SOURCE_CHARS = 2000


@bp.get("/live")
@viewer(page=False)
def live() -> Any:
    source = request.args.get("src", "")
    name = source.removeprefix("/fragments/").partition("?")[0]
    printable = source.isascii() and source.isprintable() and " " not in source
    if (
        not (source.startswith("/fragments/") and name in PAGES and printable)
        or len(source) > MAX_SOURCE_CHARS
    ):
        return refusal(400, "src must be the address of one of this dashboard's fragments")
    settings = load_settings()
    interval = settings.dashboard_refresh_seconds * PAGES[name].refresh
    handoff = {
        "kind": "page",
        "src": source,
        "interval": interval,
        "max": settings.sse_max_seconds,
        "token": operator().principal.token_id,
    }
    return Response(
        b"",
        mimetype="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            STREAM_HEADER: json.dumps(handoff),
        },
    )
