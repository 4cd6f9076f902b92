"""``python -m app.cli.respawn -- COMMAND…``: run COMMAND, and run it again whenever it exits
until this process is told to stop (SIGTERM or SIGINT).

honcho (``jobstack up``) stops every process as soon as one exits. Dramatiq's main process
exits when one of its worker processes dies (the OOM killer, a segfault), so without this a
single dead worker process would stop the API and the scheduler too. Run under this, the
worker comes back and the others never notice. It is, for one terminal, the
``Restart=always`` of docs/operations.md ("What restarts what"): restarts wait 1 s,
doubling up to 30 s, so that a command that cannot start (RabbitMQ not up yet, a broken
import) does not spin; the wait starts over once COMMAND has stayed up for a minute.

COMMAND runs through :mod:`app.cli.single_signal`, in this process group: a stop signal
reaches its main process once, as SIGTERM, whether honcho signals the whole group or
someone signals this process alone.

Both run by path, not with ``-m``: ``-m app.cli.…`` would first import the whole
``jobstack`` CLI (a second and 60 MB) into processes that need only the standard library.
``-P`` keeps app/cli/, where ``api.py`` and ``jobs.py`` live, off their import path.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
#: A run at least this long was healthy: the next restart waits FIRST_DELAY again.
STABLE_AFTER = 60.0
SINGLE_SIGNAL = str(Path(__file__).with_name("single_signal.py"))


def respawned(command: list[str]) -> list[str]:
    """The command line that runs ``command`` under this module."""
    return [sys.executable, "-P", __file__, "--", *command]


def next_delay(previous: float | None, ran_for: float) -> float:
    """The wait before the next start, given the previous wait and how long the run lasted."""
    if previous is None or ran_for >= STABLE_AFTER:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m app.cli.respawn -- COMMAND [ARGS…]", file=sys.stderr)
        return 2
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child is not None:
            # single_signal passes on only the first of this and honcho's group signal.
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay: float | None = None
    code = 0
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-P", SINGLE_SIGNAL, "--", *argv])
        if stopping.is_set():  # The stop signal came while the child was being started.
            child.send_signal(signal.SIGTERM)
        code = child.wait()
        if stopping.is_set():
            break
        ran_for = time.monotonic() - started
        delay = next_delay(delay, ran_for)
        print(
            f"respawn: the command exited with code {code} after {ran_for:.1f} s; "
            f"starting it again in {delay:g} s",
            file=sys.stderr,
            flush=True,
        )
        stopping.wait(delay)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
