"""Celery peer: prefork 2, acks_late, track_started, the database result backend on
PostgreSQL, RabbitMQ as the broker.

    python -m bench.peers.runners.celery_runner -n 5000    (under bench/.venvs/celery)

The same module is the worker's app (``celery -A bench.peers.runners.celery_runner``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from celery import Celery  # type: ignore[import-not-found,unused-ignore]

from bench.peers.runners import common

DATABASE = "bench_celery"
BROKER = os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672/bench-celery")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench")
BACKEND = "db+" + common.database_url(DATABASE).replace("postgresql://", "postgresql+psycopg://")

app = Celery("bench_celery", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_acks_late=True,
    task_track_started=True,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")  # type: ignore[untyped-decorator,unused-ignore]
def noop() -> None:
    """A job that does nothing: what is measured is the machinery around it."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--jobs", type=int, default=5000)
    total = parser.parse_args().jobs
    url = common.fresh_database(DATABASE)
    # The backend creates celery_taskmeta on its first session: before the clock starts.
    app.backend.ResultSession().close()
    app.control.purge()
    with app.producer_or_acquire() as producer:
        for _ in range(total):
            noop.apply_async(producer=producer)
    log = Path(tempfile.gettempdir()) / "bench-peer-celery.log"
    worker = common.start(
        [
            sys.executable, "-m", "celery", "-A", "bench.peers.runners.celery_runner",
            "worker", "--pool", "prefork", "--concurrency", "2", "-Q", QUEUE,
            "--loglevel", "WARNING",
        ],
        log,
    )  # fmt: skip
    count = common.postgres_counter(url)
    try:
        common.run(
            "celery",
            version("celery"),
            total,
            lambda: common.time_drain(
                lambda: count("SELECT count(*) FROM celery_taskmeta"),
                lambda: count("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"),
                total,
                worker,
            ),
        )
    finally:
        common.stop(worker)


if __name__ == "__main__":
    main()
