"""The engine's connection handling."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import db


def test_a_pooled_connection_cut_while_idle_is_replaced_before_use(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.get_engine().dialect.name != "postgresql":
        pytest.skip("SQLite has no server connection to cut")
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    with db.session_scope() as session:
        assert session.scalar(text("SELECT 1")) == 1  # a connection now sits in the pool

    # A database restart, as far as the pool can tell: every other backend is gone.
    url = make_url(clean_db).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        cut = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert cut is not None and cut[0] >= 1

    try:
        with db.session_scope() as session:
            assert session.scalar(text("SELECT 2")) == 2
    finally:
        db.get_engine().dispose()  # Other cut connections may still sit in the pool.
