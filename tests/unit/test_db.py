"""The engine's connection handling (on PostgreSQL, whatever the suite's backend: SQLite
has no server connection to cut)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from app import db
from tests.support.services import postgres_admin_url, reachable, require


def test_a_pooled_connection_cut_while_idle_is_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin_url = postgres_admin_url()
    require(reachable(admin_url, 5432), f"PostgreSQL at {admin_url}")
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    engine = db.build_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            pid = connection.scalar(text("SELECT pg_backend_pid()"))  # now idle in the pool

        # A database restart, as far as the pool can tell: its connection is gone.
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])

        with engine.connect() as connection:
            assert connection.scalar(text("SELECT 2")) == 2
            assert connection.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        engine.dispose()
