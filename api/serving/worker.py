"""The gunicorn worker class of ``jobstack api``: uvicorn's event loop with
:class:`~api.serving.protocol.HeaderDeadlineProtocol`, and the access log written by
:class:`~api.serving.access_log.AccessLog` instead of uvicorn's."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

from api.serving.protocol import HeaderDeadlineProtocol


class ApiWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "asyncio",
        "http": HeaderDeadlineProtocol,
        "lifespan": "off",
        "access_log": False,
    }
