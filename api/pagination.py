"""Opaque cursors: over (created_at, id), newest first, or after an integer row id.

Both are stable under concurrent inserts. A cursor is only ever one the API made, so
anything else, including values no column could hold, is a 422 before it reaches SQL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any, NoReturn

from flask_smorest import abort
from sqlalchemy.orm import InstrumentedAttribute

from api.limits import in_moment_range, largest_integer
from app.models import Job

#: What an id cursor decodes to: ``i`` and decimal digits.
ID_CURSOR = re.compile(r"i([0-9]{1,19})")
#: The longest job id, the length of ``jobs.id`` (a UUID).
JOB_ID_MAX_LENGTH = 36


def _refuse() -> NoReturn:
    abort(422, errors={"query": {"cursor": ["not a cursor returned by this API"]}})
    raise AssertionError("unreachable: abort raises")


def _decoded(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points after; 422 for anything else."""
    try:
        created, job_id = json.loads(_decoded(cursor))
        moment = datetime.fromisoformat(created)
    except (ValueError, TypeError, binascii.Error):
        _refuse()
    if not _is_job_id(job_id) or moment.tzinfo is None or not in_moment_range(moment):
        _refuse()
    return moment, job_id


def _is_job_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= JOB_ID_MAX_LENGTH and "\x00" not in value


def encode_id_cursor(row_id: int) -> str:
    """An opaque cursor after an integer row id (ascending listings)."""
    return base64.urlsafe_b64encode(f"i{row_id}".encode()).decode().rstrip("=")


def decode_id_cursor(cursor: str, column: InstrumentedAttribute[int]) -> int:
    """The row id of ``column`` a cursor points after; 422 for anything else."""
    try:
        found = ID_CURSOR.fullmatch(_decoded(cursor))
    except (ValueError, binascii.Error):
        _refuse()
    if found is None or int(found[1]) > largest_integer(column.type):
        _refuse()
    return int(found[1])
