"""Group commit: shared transactions, and no thread returns before its change is durable."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import db
from app.models import Lease
from app.recording.group_commit import GroupCommitter, ItemOutcome

# Lease rows are small and have a text primary key: a convenient thing to write.


def _write_leases(session: Session, names: Sequence[str]) -> list[ItemOutcome[str]]:
    from datetime import UTC, datetime

    for name in names:
        session.add(Lease(name=name, holder="test", expires_at=datetime.now(UTC)))
    session.flush()
    return [f"wrote {name}" for name in names]


def _leases() -> set[str]:
    with db.session_scope() as session:
        return set(session.scalars(select(Lease.name)))


def _committed_leases() -> set[str]:
    """What another connection sees, read outside any write transaction (SQLite's
    sessions begin IMMEDIATE, which would wait for the committer's transaction)."""
    connection = db.get_engine().raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT name FROM leases")
        names = {row[0] for row in cursor.fetchall()}
        connection.rollback()
        return names
    finally:
        connection.close()


@pytest.fixture
def committer(clean_db: str) -> Iterator[GroupCommitter[str, str]]:
    committer: GroupCommitter[str, str] = GroupCommitter(_write_leases, name="test-commit")
    yield committer
    committer.stop()


def _in_threads(committer: GroupCommitter[str, str], names: list[str]) -> dict[str, Any]:
    """Run one change per thread; returns each name's result or error."""
    results: dict[str, Any] = {}

    def one(name: str) -> None:
        try:
            results[name] = committer.run(name, give_up_after=0.5)
        except Exception as error:
            results[name] = error

    threads = [threading.Thread(target=one, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _hold_batches_until(committer: GroupCommitter[str, str], *, release_after: float) -> None:
    """Hold the committer's transactions open for a while, so that changes pile up."""
    release = threading.Event()
    threading.Timer(release_after, release.set).start()
    apply = committer._apply

    def held(session: Session, names: Sequence[str]) -> list[ItemOutcome[str]]:
        release.wait(5)
        return apply(session, names)

    committer._apply = held


def _hold_commits(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make every commit wait: returns (changes applied, let the commits go)."""
    applied = threading.Event()
    commit_may_go = threading.Event()
    real_commit = Session.commit

    def held_commit(session: Session) -> None:
        applied.set()
        commit_may_go.wait(10)
        real_commit(session)

    monkeypatch.setattr(Session, "commit", held_commit)
    return applied, commit_may_go


def test_changes_of_many_threads_share_transactions_and_each_gets_its_own_result(
    committer: GroupCommitter[str, str],
) -> None:
    _hold_batches_until(committer, release_after=0.3)
    names = [f"lease-{n}" for n in range(20)]
    results = _in_threads(committer, names)

    assert results == {name: f"wrote {name}" for name in names}
    assert _leases() == set(names)
    assert committer.commits < len(names)


def test_no_thread_returns_before_the_shared_commit(
    committer: GroupCommitter[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied, commit_may_go = _hold_commits(monkeypatch)
    returned: list[str] = []
    threads = [
        threading.Thread(target=lambda n=n: returned.append(committer.run(n, give_up_after=None)))
        for n in ("a", "b", "c")
    ]
    for thread in threads:
        thread.start()
    assert applied.wait(5)

    # The changes are applied but not committed: nobody may have returned (a worker
    # thread would ack its message now), and another connection sees nothing.
    threading.Event().wait(0.2)
    assert returned == []
    assert _committed_leases() == set()

    commit_may_go.set()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(returned) == ["wrote a", "wrote b", "wrote c"]
    assert _leases() == {"a", "b", "c"}


def test_a_commit_that_keeps_failing_gives_every_thread_the_error_and_writes_nothing(
    committer: GroupCommitter[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_commit(session: Session) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(Session, "commit", broken_commit)
    results = _in_threads(committer, ["x", "y", "z"])
    monkeypatch.undo()

    assert all(isinstance(result, OperationalError) for result in results.values()), results
    assert _leases() == set()


def test_a_change_that_breaks_the_shared_transaction_fails_alone(
    committer: GroupCommitter[str, str],
) -> None:
    committer.run("taken", give_up_after=1)
    _hold_batches_until(committer, release_after=0.3)
    results = _in_threads(committer, ["fine-1", "taken", "fine-2"])

    assert results["fine-1"] == "wrote fine-1"
    assert results["fine-2"] == "wrote fine-2"
    assert isinstance(results["taken"], Exception)  # Its primary key is taken.
    assert _leases() == {"taken", "fine-1", "fine-2"}
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Lease)) == 3


def test_a_submitted_change_calls_back_only_after_the_shared_commit(
    committer: GroupCommitter[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    applied, commit_may_go = _hold_commits(monkeypatch)
    # What the callback saw: its result, and what another connection saw at that moment.
    called: list[tuple[object, set[str], str]] = []

    def on_done(outcome: object) -> None:
        called.append((outcome, _committed_leases(), threading.current_thread().name))

    for name in ("p", "q"):
        committer.submit(name, on_done, give_up_after=None)  # Returns at once.
    assert applied.wait(5)
    threading.Event().wait(0.2)
    assert called == []  # Applied, not committed: an ack now could lose the change.
    assert not committer.flush(timeout=0.1)

    commit_may_go.set()
    assert committer.flush(timeout=10)
    assert sorted(outcome for outcome, _, _ in called) == ["wrote p", "wrote q"]  # type: ignore[type-var]
    assert all(seen == {"p", "q"} for _, seen, _ in called)  # Already durable.
    assert {thread for _, _, thread in called} == {"test-commit"}


def test_a_submitted_change_that_fails_calls_back_with_its_error(
    committer: GroupCommitter[str, str],
) -> None:
    committer.run("dup", give_up_after=1)
    outcomes: list[object] = []
    committer.submit("dup", outcomes.append, give_up_after=1)
    assert committer.flush(timeout=10)

    assert len(outcomes) == 1 and isinstance(outcomes[0], Exception)
