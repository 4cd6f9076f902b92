"""``jobstack up``: the API, the workers and the scheduler in one terminal."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from app.cli.respawn import respawned


def _processes(bind: str, worker_processes: int, worker_threads: int) -> dict[str, list[str]]:
    python = sys.executable
    processes = {
        "api": [python, "-m", "app.cli", "api", "--bind", bind],
        "worker": [
            python,
            "-m",
            "dramatiq",
            "actors",
            "--processes",
            str(worker_processes),
            "--threads",
            str(worker_threads),
        ],
    }
    import actors  # noqa: F401  (to see which actors are periodic)
    from app.broker import broker

    # periodiq exits when it has nothing to schedule; it would be started again forever.
    if any("periodic" in actor.options for actor in broker.actors.values()):
        processes["scheduler"] = [str(Path(python).with_name("periodiq")), "actors"]
    return processes


@click.command("up")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="API address.")
@click.option("--processes", "worker_processes", default=2, show_default=True)
@click.option("--threads", "worker_threads", default=4, show_default=True)
def up_command(bind: str, worker_processes: int, worker_threads: int) -> None:
    """Run the API, workers and scheduler with prefixed logs until Ctrl-C; start again any of
    them that exits."""
    from honcho.manager import Manager

    manager = Manager()
    for name, command in _processes(bind, worker_processes, worker_threads).items():
        # honcho stops everything when one process exits, and Dramatiq's main process exits
        # when one of its worker processes dies: respawn keeps each of them running.
        manager.add_process(name, shlex.join(respawned(command)), env=dict(os.environ))
    manager.loop()
    sys.exit(manager.returncode)
