"""In-process Dramatiq workers for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq


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
