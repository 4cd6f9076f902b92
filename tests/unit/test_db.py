"""The engine's connection handling (on PostgreSQL, whatever the suite's backend: SQLite
has no server connection to cut, and no pool bounds or prepared statements)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack

import psycopg
import pytest
from sqlalchemy import Engine, exc, text
from sqlalchemy.orm import Session

from app import db
from app.config import Settings, load_settings
from app.errors import ConfigurationError
from app.models import Lease
from app.recording.group_commit import GroupCommitter, ItemOutcome
from app.timeutil import utcnow
from tests.support.services import postgres_admin_url, reachable, require
from tests.support.waiting import wait_until


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


def _engine(settings: Settings) -> Engine:
    admin_url = postgres_admin_url()
    require(reachable(admin_url, 5432), f"PostgreSQL at {admin_url}")
    return db.build_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1), settings)


def test_a_process_never_holds_more_than_pool_size_plus_overflow_connections() -> None:
    settings = load_settings(
        {
            "JOBSTACK_DB_POOL_SIZE": "2",
            "JOBSTACK_DB_MAX_OVERFLOW": "1",
            "JOBSTACK_DB_POOL_TIMEOUT": "0.3",
        }
    )
    engine = _engine(settings)
    try:
        assert engine.pool.size() == 2  # type: ignore[attr-defined]
        with ExitStack() as held:
            pids = {
                held.enter_context(engine.connect()).scalar(text("SELECT pg_backend_pid()"))
                for _ in range(3)
            }
            assert len(pids) == 3  # Two pooled and one overflow: three real connections.
            started = time.monotonic()
            with pytest.raises(exc.TimeoutError), engine.connect():
                pass
            assert 0.3 <= time.monotonic() - started < 5
        # The overflow connection is closed on its return; the pool keeps two.
        assert engine.pool.checkedin() == 2  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.parametrize(("prepared", "threshold"), [("true", 5), ("false", None)])
def test_psycopg_prepares_statements_unless_switched_off(
    prepared: str, threshold: int | None
) -> None:
    engine = _engine(load_settings({"JOBSTACK_DB_PREPARED_STATEMENTS": prepared}))
    try:
        with engine.connect() as connection:
            psycopg_connection = connection.connection.driver_connection
            assert isinstance(psycopg_connection, psycopg.Connection)
            # 5 is psycopg's own default: prepared statements on means untouched.
            assert psycopg_connection.prepare_threshold == threshold
            for _ in range(6):
                connection.execute(
                    text("SELECT count(*) FROM pg_class WHERE relpages > :n"), {"n": 1}
                )
            prepared_here = connection.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
            assert prepared_here == (1 if threshold else 0)
    finally:
        engine.dispose()


def test_the_settings_come_from_the_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSTACK_DB_POOL_SIZE", "3")
    monkeypatch.setenv("JOBSTACK_DB_MAX_OVERFLOW", "0")
    engine = db.build_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connects
    try:
        assert (engine.pool.size(), engine.pool._max_overflow) == (3, 0)  # type: ignore[attr-defined]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "variables", [{"JOBSTACK_DB_POOL_SIZE": "0"}, {"JOBSTACK_DB_MAX_OVERFLOW": "-1"}]
)
def test_a_pool_without_connections_or_with_unbounded_overflow_is_refused(
    variables: dict[str, str],
) -> None:
    with pytest.raises(ConfigurationError, match="JOBSTACK_DB_POOL_SIZE must be at least 1"):
        db.build_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", load_settings(variables))


def _write_leases(session: Session, names: Sequence[str]) -> list[ItemOutcome[str]]:
    for name in names:
        session.add(Lease(name=name, holder="test", expires_at=utcnow()))
    session.flush()
    return [f"wrote {name}" for name in names]


def test_the_group_committer_waits_for_a_connection_of_a_full_pool_instead_of_failing(
    postgres: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A process whose pool is one connection, held by another of its threads.
    monkeypatch.setenv("JOBSTACK_DB_POOL_SIZE", "1")
    monkeypatch.setenv("JOBSTACK_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("JOBSTACK_DB_POOL_TIMEOUT", "0.2")
    engine = db.configure(db.get_engine().url.render_as_string(hide_password=False))
    committer: GroupCommitter[str, str] = GroupCommitter(_write_leases, name="test-full-pool")
    outcome: dict[str, object] = {}

    def change() -> None:
        try:
            outcome["result"] = committer.run("full-pool", give_up_after=None)
        except Exception as error:
            outcome["error"] = error

    try:
        with engine.connect() as held:
            held.scalar(text("SELECT 1"))
            waiting = threading.Thread(target=change)
            waiting.start()
            wait_until(
                lambda: "Job database unavailable" in caplog.text, 10, "the committer to wait"
            )
            assert waiting.is_alive() and not outcome
        waiting.join(10)
        assert outcome == {"result": "wrote full-pool"}
    finally:
        committer.stop()
