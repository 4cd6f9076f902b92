"""Database leases: at most one holder at a time for a named singleton.

A lease is taken, renewed or refused by one statement, an upsert whose update applies only
when the row is this holder's or has expired::

    INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, <db now> + ttl)
    ON CONFLICT (name) DO UPDATE
        SET holder = excluded.holder, expires_at = excluded.expires_at
        WHERE leases.holder = excluded.holder OR leases.expires_at < <db now>
    RETURNING holder

A refusal is no error: PostgreSQL finds the conflict before it writes a row, so a refused
holder leaves no dead tuple and no ERROR in the server's log (the INSERT and savepoint
this replaces left one of each per try, every second, in every process not holding it).

Time is the database's clock, not the holders': hosts whose clocks disagree still agree
on who holds the lease. On SQLite the database's clock is the clock of the one host that
can use the file, and the value is written as text in SQLAlchemy's own format for the
column, so that it compares correctly with what :class:`~app.models.UTCDateTime` writes
and reads back as a datetime.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import DateTime, String, delete, func, literal, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.models import Lease

#: SQLite's clock in SQLAlchemy's storage format of a DateTime there, ``YYYY-MM-DD
#: HH:MM:SS.ffffff`` (SQLite gives milliseconds: ``%f`` is ``SS.SSS``, padded with
#: ``000``). Text of another format (``T``, no fraction) would compare wrongly as text.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f"


def _database_now(dialect: str, plus: timedelta | None = None) -> ColumnElement[Any]:
    """The database's current time (plus ``plus``) as an SQL expression."""
    if dialect == "postgresql":
        # The statement's start: one moment for the whole statement (clock_timestamp()
        # would differ between its two uses), and not the transaction's start (now()),
        # which may be long ago in a caller's transaction.
        moment: ColumnElement[Any] = func.statement_timestamp(type_=DateTime(timezone=True))
        return moment + plus if plus is not None else moment
    # 'now' is one moment within a statement in SQLite too.
    modifiers = [f"{plus.total_seconds():+.6f} seconds"] if plus is not None else []
    return func.strftime(_SQLITE_FORMAT, "now", *modifiers, type_=String).concat(
        literal("000", String)
    )


def acquire(session: Session, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``ttl`` from now by the database's
    clock; False, without an error, while someone else holds it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Lease).values(
        name=name, holder=holder, expires_at=_database_now(dialect, plus=ttl)
    )
    held_by = session.execute(
        statement.on_conflict_do_update(
            index_elements=[Lease.name],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=or_(
                Lease.holder == statement.excluded.holder,
                Lease.expires_at < _database_now(dialect),
            ),
        ).returning(Lease.holder)
    ).scalar_one_or_none()
    return held_by == holder


def release(session: Session, name: str, holder: str) -> None:
    """Give lease ``name`` up, if ``holder`` has it."""
    session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
