"""The API's ASGI app served by uvicorn in a thread of the test process, on a free port:
what ``jobstack api`` serves, with the test's database and broker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from api.serving.app import create_asgi_app
from api.serving.protocol import HeaderDeadlineProtocol
from tests.support.ports import free_port
from tests.support.waiting import wait_until


@contextmanager
def serving_in_thread() -> Iterator[int]:
    """Serve the API until the block ends; yields its port."""
    port = free_port()
    config = uvicorn.Config(
        create_asgi_app(),
        host="127.0.0.1",
        port=port,
        http=HeaderDeadlineProtocol,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "uvicorn to start")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
