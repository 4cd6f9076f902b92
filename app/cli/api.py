"""``jobstack api``: the REST API under gunicorn, on uvicorn's event loop (see
:mod:`api.serving`)."""

from __future__ import annotations

import os
import sys

import click

from app.config import load_settings


@click.command("api")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to serve.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option(
    "--threads",
    type=click.IntRange(1, 512),
    default=None,
    help="Threads per worker that run the views (default: JOBSTACK_API_THREADS, 16). Slow "
    "clients and open event streams hold none.",
)
def api_command(bind: str, workers: int, threads: int | None) -> None:
    """Serve the REST API with gunicorn: an event loop per worker reads requests and writes
    event streams, a thread pool runs the views."""
    env = dict(os.environ)
    env["JOBSTACK_API_THREADS"] = str(threads or load_settings().api_threads)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--worker-class",
        "api.serving.worker.ApiWorker",
        # Sets up the gunicorn.access logger, which api.serving.access_log writes to.
        "--access-logfile",
        "-",
        "--config",
        "python:app.cli.gunicorn_conf",
        "api.serving.app:create_asgi_app()",
    ]
    os.execve(sys.executable, argv, env)
