"""Worker processes: how each names itself, its heartbeat in the registry, and who is alive."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Worker
from app.timeutil import utcnow


def worker_id() -> str:
    """``hostname:pid`` of this process (read at call time, so correct after fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_key(pid: int | None = None) -> str | None:
    """What names process ``pid`` (default: this one) apart from every other process:
    ``boot id|PID namespace|time namespace|pid|start time``. None where /proc does not
    tell.

    A pid alone is reused, and the same pid in another container or on another host is
    another process; the key is only ever compared within one kernel, PID namespace and
    time namespace (the start time /proc shows depends on the reader's), in
    :func:`process_gone`.
    """
    pid = os.getpid() if pid is None else pid
    scope = _pid_scope()
    stat = _stat(pid)
    if scope is None or stat is None:
        return None
    return f"{scope}|{pid}|{stat[1]}"


def process_gone(key: str) -> bool:
    """True only when the process ``key`` names has certainly ended: it ran under this
    kernel and these namespaces, and its pid is now unused, a zombie, or another
    process. A process elsewhere (another host or container), or one this process may
    not look at, is never called gone: the caller would run its job a second time."""
    parts = key.split("|")
    if len(parts) != 5 or not parts[3].isdigit() or _pid_scope() != "|".join(parts[:3]):
        return False
    pid = int(parts[3])
    stat = _stat(pid)
    if stat is None:
        # No /proc entry we may read: hidden (hidepid, another user) or gone. Only the
        # kernel's answer to signal 0 tells the two apart.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    state, started = stat
    return state in ("Z", "X") or started != parts[4]


def _pid_scope() -> str | None:
    """This kernel's boot id, and this process's PID and time namespaces; None unless
    /proc is this PID namespace's own (its pids are the ones os.getpid() gives)."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return None
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pids = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    try:
        times = os.readlink("/proc/self/ns/time")
    except OSError:
        times = ""  # Kernels before 5.6 have no time namespaces.
    return f"{boot}|{pids}|{times}"


def _stat(pid: int) -> tuple[str, str] | None:
    """The state of ``pid`` and when it started (clock ticks since boot), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces, parentheses and any bytes: read only
    # the fields after it.
    fields = stat[stat.rindex(b")") + 2 :].decode("ascii", "replace").split()
    return fields[0], fields[19]


@dataclass(frozen=True)
class Beat:
    """What one heartbeat reports."""

    worker_id: str
    pid: int
    queues: list[str]
    started_at: datetime
    running_job_ids: list[str]
    processed: int
    failed: int
    threads: int | None = None
    rss_bytes: int | None = None
    process_key: str | None = None


def record_beat(session: Session, beat: Beat) -> None:
    """Insert or refresh the worker's row."""
    values = {
        "id": beat.worker_id,
        "hostname": socket.gethostname(),
        "pid": beat.pid,
        "queues": beat.queues,
        "started_at": beat.started_at,
        "last_seen": utcnow(),
        "running_job_ids": beat.running_job_ids,
        "processed": beat.processed,
        "failed": beat.failed,
        "threads": beat.threads,
        "rss_bytes": beat.rss_bytes,
        "process_key": beat.process_key,
        "stopped_at": None,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Worker).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Worker.id],
            set_={key: statement.excluded[key] for key in values if key != "id"},
        )
    )


def record_stop(session: Session, worker_id: str) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(stopped_at=utcnow(), last_seen=utcnow(), running_job_ids=[])
    )


def status(worker: Worker, gone_after: float) -> str:
    """``alive``, ``stopped`` (shut down cleanly) or ``gone`` (silent for ``gone_after`` s)."""
    if worker.stopped_at is not None:
        return "stopped"
    if utcnow() - worker.last_seen > timedelta(seconds=gone_after):
        return "gone"
    return "alive"


def resident_bytes() -> int | None:
    """This process's resident memory, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def list_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.started_at.desc())))
