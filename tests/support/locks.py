"""Holding a job's row, so that a worker's commit of the job's next state waits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app import db


@contextmanager
def job_row_held(job_id: str) -> Iterator[None]:
    """Hold the job's row (PostgreSQL) or the database (SQLite) in an open transaction."""
    connection = db.get_engine().raw_connection()
    try:
        cursor = connection.cursor()
        if db.get_engine().dialect.name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        else:
            cursor.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
        yield
    finally:
        connection.rollback()
        connection.close()
