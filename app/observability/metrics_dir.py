"""The folder where a host's worker processes share their metrics (prometheus_client's
multiprocess mode): each process writes its own files, the metrics server adds them up.

The folder is emptied once per ``dramatiq`` command, by whichever of its worker processes
boots first: files left there were counted by an earlier command, whose processes are
gone. Their counters would be added to the new ones, and their in-progress gauges would
never fall. The worker processes of one command are children of that command's process,
so the parent's identity tells the first of them from the others.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

#: prometheus_client's own variable: where multiprocess values are written.
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The file whose lock makes emptying the folder and claiming it one step.
LOCK_FILE = ".lock"
#: The file naming the ``dramatiq`` command whose processes write into the folder.
OWNER_FILE = ".owner"


def share(path: str) -> None:
    """Make this worker process write its metrics into ``path``; call it before the
    process creates any metric."""
    claim(path, this_command())
    os.environ[MULTIPROC_VARIABLE] = path
    # prometheus_client chooses between single- and multi-process values when it is first
    # imported, from the variable just set. Had something imported it earlier, the values
    # of the metrics created from now on would stay in this process: choose again.
    from prometheus_client import values

    if not values.ValueClass._multiprocess:
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def claim(path: str, owner: str) -> bool:
    """Claim ``path`` for ``owner``'s processes; True when it was emptied first.

    It is emptied only when no command that claimed it is still running: a second
    ``dramatiq`` command on the host joins the first's folder (one server, the first to
    bind the port, then serves both) instead of wiping its live values.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a") as lock:
        # Held until the file is closed: the other worker processes wait here, then find
        # the folder claimed.
        fcntl.flock(lock, fcntl.LOCK_EX)
        owner_file = folder / OWNER_FILE
        owners = owner_file.read_text().split() if owner_file.exists() else []
        if owner in owners:
            return False
        running = [other for other in owners if _running(other)]
        emptied = not running
        if emptied:
            for stale in folder.glob("*.db"):
                stale.unlink()
        owner_file.write_text("\n".join([*running, owner]))
        return emptied


def _running(owner: str) -> bool:
    """Whether the command ``owner`` (as :func:`this_command` names it) still runs."""
    pid, _, started = owner.partition(":")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not started or stat.rsplit(")", 1)[1].split()[19] == started


def this_command() -> str:
    """The ``dramatiq`` command this worker process belongs to: its parent's pid and start
    time (a pid alone recurs, e.g. in a container started again)."""
    parent = os.getppid()
    try:
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:
        return str(parent)
    # Field 22 of proc(5) is the start time; the name before it may contain spaces.
    return f"{parent}:{stat.rsplit(')', 1)[1].split()[19]}"


def leave(path: str) -> None:
    """Drop this process's share of the live gauges (it runs nothing any more)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
