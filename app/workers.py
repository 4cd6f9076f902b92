"""Worker processes: how each names itself, its heartbeat in the registry, and who is alive."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Worker
from app.timeutil import utcnow


def worker_id() -> str:
    """``hostname:pid`` of this process (read at call time, so correct after fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
