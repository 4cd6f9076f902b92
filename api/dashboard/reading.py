"""The database session the dashboard reads in.

On PostgreSQL it plans every statement for its own values (``plan_cache_mode =
force_custom_plan``, for this transaction only). psycopg prepares a statement after its
fifth run on a connection, and PostgreSQL then falls back to one generic plan for every
value: for "this tenant's failures" that plan walks the whole ``finished_at`` index
(measured on 1,000,000 jobs: 58 ms planned for the values, 271 ms generic). The workers'
sessions keep their prepared plans.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

from app import db


@contextmanager
def reading() -> Iterator[Session]:
    with db.session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        yield session
