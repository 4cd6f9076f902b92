"""Database work that waits out a database outage instead of failing a message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app import db

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0


def run_in_transaction(work: Callable[[Session], T], *, give_up_after: float | None) -> T:
    """Run ``work`` in a fresh transaction, retrying while the database is unreachable.

    Only connection-level errors (refused, dropped, locked) are
    retried; ``give_up_after`` seconds bound the wait (``None`` waits for ever), after
    which the last error is raised.
    """
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    pause = FIRST_PAUSE
    while True:
        try:
            with db.session_scope() as session:
                return work(session)
        except (OperationalError, InterfaceError) as error:
            if deadline is not None and time.monotonic() + pause > deadline:
                raise
            logger.error("Job database unavailable (%s); retrying in %.1fs.", error.orig, pause)
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
