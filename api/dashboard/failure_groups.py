"""Failed jobs grouped by exception type and top stack frame (where it was raised), with
counts and first and last seen, like an error tracker's issues.

Grouping reads the tail of each traceback, so it runs over the most recent failures of
the window only (:data:`MAX_FAILURES_READ`): the page says when there were more.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Job
from app.states import JobState

#: Failures read per grouping, newest first.
MAX_FAILURES_READ = 5000
#: Characters of a traceback's end read: its last frame and the exception line.
TAIL_CHARS = 600
WINDOW = timedelta(days=7)
FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')


@dataclass(frozen=True)
class FailureGroup:
    error_type: str
    frame: str
    count: int
    first_seen: datetime
    last_seen: datetime
    example_message: str
    example_job: str

    @property
    def key(self) -> str:
        """What names the group in links and forms (not the frame itself, which tenants
        are not shown: it is a server path)."""
        return group_key(self.error_type, self.frame)

    @property
    def function(self) -> str:
        """The frame's function alone (``in parse_archive``), what a tenant is shown."""
        return self.frame.rpartition(" ")[2] if " in " in self.frame else self.frame


def group_key(error_type: str, frame: str) -> str:
    return hashlib.sha256(f"{error_type}\n{frame}".encode()).hexdigest()[:24]


def top_frame(traceback_tail: str | None) -> str:
    """``folder/file.py:line in function`` of the innermost frame; ``?`` without one."""
    frames = list(FRAME.finditer(traceback_tail or ""))
    if not frames:
        return "?"
    last = frames[-1]
    path = "/".join(last["path"].replace("\\", "/").split("/")[-2:])
    return f"{path}:{last['line']} in {last['function']}"


Failure = tuple[str | None, str | None, datetime, str | None, str]
"""error_type, traceback tail, finished_at, message (its start), job id."""


def _failures(session: Session, tenant: str | None, now: datetime) -> list[Failure]:
    dialect = session.get_bind().dialect.name
    tail = (
        func.right(Job.error_traceback, TAIL_CHARS)
        if dialect == "postgresql"
        else func.substr(Job.error_traceback, -TAIL_CHARS)
    )
    message = func.substr(Job.error_message, 1, 300)
    query = (
        select(Job.error_type, tail, Job.finished_at, message, Job.id)
        .where(Job.state == JobState.FAILED.value, Job.finished_at >= now - WINDOW)
        .order_by(Job.finished_at.desc())
        .limit(MAX_FAILURES_READ + 1)
    )
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    return [tuple(row) for row in session.execute(query)]


def failure_groups(
    session: Session, *, tenant: str | None, now: datetime
) -> tuple[list[FailureGroup], bool]:
    """The groups, largest first, and whether more failures exist than were read."""
    rows = _failures(session, tenant, now)
    groups: dict[tuple[str, str], FailureGroup] = {}
    for error_type, tail, finished_at, message, job_id in rows[:MAX_FAILURES_READ]:
        key = (error_type or "?", top_frame(tail))
        seen = groups.get(key)
        if seen is None:
            # Rows come newest first: a group's first row is its last failure.
            groups[key] = FailureGroup(*key, 1, finished_at, finished_at, message or "", job_id)
        else:
            groups[key] = replace(seen, count=seen.count + 1, first_seen=finished_at)
    found = sorted(groups.values(), key=lambda group: (-group.count, group.error_type))
    return found, len(rows) > MAX_FAILURES_READ


def find_group(
    session: Session, *, tenant: str | None, key: str, now: datetime
) -> tuple[FailureGroup | None, list[str]]:
    """The group named ``key`` and its failed jobs (within what grouping reads)."""
    group, ids = None, []
    for row_type, tail, finished_at, message, job_id in _failures(session, tenant, now)[
        :MAX_FAILURES_READ
    ]:
        error_type, frame = row_type or "?", top_frame(tail)
        if group_key(error_type, frame) != key:
            continue
        ids.append(job_id)
        if group is None:
            group = FailureGroup(
                error_type, frame, 0, finished_at, finished_at, message or "", job_id
            )
        group = replace(group, count=group.count + 1, first_seen=finished_at)
    return group, ids
