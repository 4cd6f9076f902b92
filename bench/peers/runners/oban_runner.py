"""Oban for Python peer: one ``oban start`` process, queue limit 8 (async no-op jobs on
its event loop), PostgreSQL as both the queue and the record.

    python -m bench.peers.runners.oban_runner -n 5000    (under bench/.venvs/oban, Python ≥ 3.12)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from oban import Oban, schema  # type: ignore[import-not-found,unused-ignore]

from bench.peers.runners import common
from bench.peers.runners.oban_workers import QUEUE, Noop

DATABASE = "bench_oban"
CONCURRENCY = 8


async def _fill(url: str, total: int) -> None:
    pool = await Oban.create_pool(url)
    try:
        await schema.install(pool)
        # Client mode (no queues): enqueues only. One INSERT for the whole backlog.
        oban = Oban(pool=pool)
        noop: Any = Noop  # Its new() comes from oban's @worker, which mypy cannot see.
        jobs = await oban.enqueue_many(noop.new() for _ in range(total))
        assert len(jobs) == total
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--jobs", type=int, default=5000)
    total = parser.parse_args().jobs
    url = common.fresh_database(DATABASE)
    asyncio.run(_fill(url, total))
    log = Path(tempfile.gettempdir()) / "bench-peer-oban.log"
    worker = common.start(
        [
            sys.executable, "-m", "oban", "start", "--dsn", url,
            "--queues", f"{QUEUE}:{CONCURRENCY}", "--log-level", "warning",
            # Else it imports every module under the working directory, looking for crons.
            "--cron-modules", "bench.peers.runners.oban_workers",
        ],
        log,
    )  # fmt: skip
    count = common.postgres_counter(url)
    try:
        common.run(
            "oban",
            version("oban"),
            total,
            lambda: common.time_drain(
                lambda: count("SELECT count(*) FROM oban_jobs WHERE state <> 'available'"),
                lambda: count("SELECT count(*) FROM oban_jobs WHERE state = 'completed'"),
                total,
                worker,
            ),
        )
    finally:
        common.stop(worker)


if __name__ == "__main__":
    main()
