"""``jobstack api``: the REST API under gunicorn."""

from __future__ import annotations

import os
import sys

import click

#: Threads per gunicorn worker: event streams hold a thread each while they are open.
THREADS = 16


@click.command("api")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to serve.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option(
    "--threads",
    default=THREADS,
    show_default=True,
    help="Threads per worker (each open event stream holds one).",
)
def api_command(bind: str, workers: int, threads: int) -> None:
    """Serve the REST API with gunicorn (threaded workers)."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
        "--config",
        "python:app.cli.gunicorn_conf",
        "api:create_app()",
    ]
    os.execv(sys.executable, argv)
