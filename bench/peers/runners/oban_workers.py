"""The Oban peer's worker, in a module of its own so that its name
(``bench.peers.runners.oban_workers.Noop``) resolves in the ``oban start`` process."""

from __future__ import annotations

from typing import Any

from oban import worker  # type: ignore[import-not-found,unused-ignore]

QUEUE = "bench"


@worker(queue=QUEUE)  # type: ignore[untyped-decorator,unused-ignore]
class Noop:
    """A job that does nothing: what is measured is the machinery around it."""

    async def process(self, job: Any) -> None:
        return None
