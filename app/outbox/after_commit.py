"""Publishing a job's message once the transaction that wrote its row commits.

``submit(..., session=s)`` and operator retries register their messages here; a rollback of
the transaction, or of the SAVEPOINT they were registered in, drops them. Nothing is ever
published for a row that was not committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from app.outbox.publish import publish

_OUTBOX_KEY = "jobstack_outbox"


@dataclass(frozen=True)
class _Pending:
    """A message to publish once the transaction it was registered in commits."""

    transaction: SessionTransaction
    broker: dramatiq.Broker
    message: dramatiq.Message[Any]


def publish_after_commit(
    session: Session, broker: dramatiq.Broker, message: dramatiq.Message[Any]
) -> None:
    """Publish ``message`` when ``session``'s outermost transaction commits.

    The message is built now: after the commit the caller's session may have expired
    the job's attributes and can no longer load them. A rollback of the transaction, or
    of the SAVEPOINT it was registered in, drops it.
    """
    pending: list[_Pending] | None = session.info.get(_OUTBOX_KEY)
    if pending is None:
        pending = session.info[_OUTBOX_KEY] = []
        # The listeners stay for the session's life (removing one while SQLAlchemy
        # dispatches the event is not allowed); with nothing pending they do nothing.
        if not event.contains(session, "after_commit", _flush_outbox):
            event.listen(session, "after_commit", _flush_outbox)
            event.listen(session, "after_soft_rollback", _drop_rolled_back)
    current = session.get_nested_transaction() or session.get_transaction()
    assert current is not None, "publish_after_commit needs a transaction in progress"
    pending.append(_Pending(current, broker, message))


def _flush_outbox(session: Session) -> None:
    if session.in_nested_transaction():
        return  # A SAVEPOINT was released; the outer transaction has not committed yet.
    pending: list[_Pending] = session.info.pop(_OUTBOX_KEY, [])
    by_broker: dict[int, tuple[dramatiq.Broker, list[dramatiq.Message[Any]]]] = {}
    for entry in pending:
        by_broker.setdefault(id(entry.broker), (entry.broker, []))[1].append(entry.message)
    for broker, messages in by_broker.values():
        publish(broker, messages, mark_soon=True)


def _drop_rolled_back(session: Session, rolled_back: SessionTransaction) -> None:
    pending: list[_Pending] | None = session.info.get(_OUTBOX_KEY)
    if pending:
        pending[:] = [entry for entry in pending if not _inside(entry.transaction, rolled_back)]


def _inside(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False
