"""Holding job rows, so that a worker's commit of their next state waits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app import db


@contextmanager
def job_row_held(job_id: str) -> Iterator[None]:
    """Hold the job's row (PostgreSQL) or the database (SQLite) in an open transaction."""
    with _held("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,)):
        yield


@contextmanager
def all_jobs_held() -> Iterator[None]:
    """Hold every job's row (PostgreSQL) or the database (SQLite) in an open transaction."""
    with _held("SELECT id FROM jobs FOR UPDATE", ()):
        yield


@contextmanager
def _held(select_for_update: str, parameters: tuple[str, ...]) -> Iterator[None]:
    connection = db.get_engine().raw_connection()
    try:
        cursor = connection.cursor()
        if db.get_engine().dialect.name == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        else:
            cursor.execute(select_for_update, parameters)
        yield
    finally:
        connection.rollback()
        connection.close()
