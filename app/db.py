"""Engine and session factory.

The engine is built lazily from settings (or explicitly by :func:`configure`), so
importing this module reads no configuration. Worker processes call :func:`dispose`
after fork so that no pooled connection is shared between processes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, load_settings
from app.errors import ConfigurationError

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


#: Called with every engine built from now on (tracing adds its SQL spans this way).
engine_hooks: list[Callable[[Engine], None]] = []


def build_engine(url: str, settings: Settings | None = None) -> Engine:
    """An engine for ``url`` with jobstack's connection settings (``settings``, by default
    the environment's)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _prepare_sqlite(engine)
    else:
        engine = create_engine(url, **server_pool_options(parsed, settings or load_settings()))
        _ping_when_idle(engine)
    for hook in engine_hooks:
        hook(engine)
    return engine


def server_pool_options(url: URL, settings: Settings) -> dict[str, Any]:
    """``create_engine`` options of a database server's engine: the pool's bounds and, when
    prepared statements are off, psycopg's ``prepare_threshold=None``.

    Every connection of a process comes from this one pool (the group committer's too), so
    ``db_pool_size + db_max_overflow`` bounds what the process holds at once; a thread
    wanting one more waits up to ``db_pool_timeout``.
    """
    if settings.db_pool_size < 1 or settings.db_max_overflow < 0:
        raise ConfigurationError(
            "JOBSTACK_DB_POOL_SIZE must be at least 1 and JOBSTACK_DB_MAX_OVERFLOW at least 0, "
            f"not {settings.db_pool_size} and {settings.db_max_overflow}"
        )
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }
    # PgBouncer before 1.21 hands a client's next transaction to any server connection: a
    # statement psycopg prepared on one is missing on the next ("does not exist"), or another
    # client's of the same name is already there ("already exists"). Other drivers
    # (psycopg2) never prepare on their own.
    if not settings.db_prepared_statements and url.get_driver_name() == "psycopg":
        options["connect_args"] = {"prepare_threshold": None}
    return options


#: A pooled connection unused for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use, but only after it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip (and, in
    autocommit, a transaction) for every request of a busy API. A connection that was
    in use a moment ago is as good as a ping; one that sat idle may have been cut by a
    database restart, and is replaced transparently when its ping fails.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in_at")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"connection failed its ping: {error}") from error
        if not alive:
            raise exc.DisconnectionError("connection failed its ping")


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


def current_engine() -> Engine | None:
    """The process's engine if it was built already."""
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
