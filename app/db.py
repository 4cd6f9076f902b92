"""Engine and session factory.

The engine is built lazily from settings (or explicitly by :func:`configure`), so
importing this module reads no configuration. Worker processes call :func:`dispose`
after fork so that no pooled connection is shared between processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import load_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000

_lock = threading.Lock()
_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None
_engine_pid: int | None = None


def _prepare_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout and immediate write transactions for SQLite.

    pysqlite opens transactions lazily and as DEFERRED; a deferred transaction that
    reads and then writes can fail with "database is locked" without waiting, so
    every transaction starts as BEGIN IMMEDIATE and waits its turn instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def build_engine(url: str) -> Engine:
    """An engine for ``url`` with jobstack's connection settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _prepare_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def configure(url: str | None = None) -> Engine:
    """(Re)build the process's engine, from ``url`` or from the settings."""
    global _engine, _sessions, _engine_pid
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = build_engine(url or load_settings().database_url)
        _engine_pid = os.getpid()
        _sessions = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def get_engine() -> Engine:
    """The process's engine, built from the settings on first use."""
    if _engine is None:
        configure()
    assert _engine is not None
    return _engine


def new_session() -> Session:
    """A new session; the caller commits or rolls back and closes it."""
    if _sessions is None:
        configure()
    assert _sessions is not None
    return _sessions()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_after_fork() -> None:
    """In a forked child, forget the parent's pooled connections without closing them.

    Closing them would close the parent's sockets too; the child opens its own.
    """
    global _engine_pid
    if _engine is not None and _engine_pid != os.getpid():
        _engine.dispose(close=False)
        _engine_pid = os.getpid()
