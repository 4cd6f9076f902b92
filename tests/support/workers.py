"""In-process Dramatiq workers for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq

from app.middleware.tracking import Tracking


@contextmanager
def running_worker(broker: dramatiq.Broker, threads: int = 4) -> Iterator[dramatiq.Worker]:
    """A started worker, stopped afterwards.

    Dramatiq's Worker adds a middleware to the broker at start and never removes it;
    it is removed here so that workers of earlier tests leave nothing behind.
    """
    before = list(broker.middleware)
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=threads)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        broker.middleware[:] = [m for m in broker.middleware if m in before]


def close_broker(broker: dramatiq.Broker) -> None:
    """Close a test's broker and stop its group committer.

    A test that hands messages to the middleware's hooks without a worker starts the
    committer, and only a worker's shutdown stops it: each one left running holds a
    pooled database connection until the suite exhausts the pool.
    """
    for middleware in broker.middleware:
        if isinstance(middleware, Tracking):
            middleware.close()
    broker.close()
