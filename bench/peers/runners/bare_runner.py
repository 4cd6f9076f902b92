"""Bare Dramatiq, the ceiling: ``dramatiq bench.bare_actors -p 1 -t 8`` on the local
RabbitMQ, Dramatiq's default middleware, a no-op actor, no record of any job.

    python -m bench.peers.runners.bare_runner -n 5000    (project venv)

Nothing is written anywhere, so the clock runs from the first message taken to the queue
holding none ready (a worker may then still hold its prefetch, up to 16 messages, a few
milliseconds of work); the check that every message ran is the queue left empty once the
worker has stopped (Dramatiq returns unfinished messages at a warm shutdown).
"""

from __future__ import annotations

import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from bench import bare_actors
from bench.peers.runners import common
from bench.services import QueueWatch


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--jobs", type=int, default=5000)
    total = parser.parse_args().jobs
    bare_actors.broker.declare_queue(bare_actors.QUEUE, ensure=True)
    bare_actors.broker.flush(bare_actors.QUEUE)
    for _ in range(total):
        bare_actors.noop.send()
    watch = QueueWatch(bare_actors.QUEUE)
    log = Path(tempfile.gettempdir()) / "bench-peer-bare.log"
    dramatiq = str(Path(sys.executable).with_name("dramatiq"))
    worker = common.start([dramatiq, "bench.bare_actors", "-p", "1", "-t", "8"], log)
    left: list[int] = []

    def measure() -> common.Drain:
        drain = common.time_drain(
            lambda: total - watch.ready(), lambda: total - watch.ready(), total, worker
        )
        common.stop(worker)
        left.append(watch.ready())
        return common.Drain(drain.seconds, total - left[0], drain.cpu, drain.peak_rss_mib)

    try:
        common.run("bare-dramatiq", version("dramatiq"), total, measure)
    finally:
        common.stop(worker)
        watch.close()


if __name__ == "__main__":
    main()
