"""Group commit: many threads' database changes, one transaction, one commit.

Worker threads hand their change to a :class:`GroupCommitter` and either block
(:meth:`~GroupCommitter.run`) or leave a callback (:meth:`~GroupCommitter.submit`). Its
thread takes every change waiting, applies them together on one long-lived connection,
commits once, and only then wakes each thread, or calls each callback, with its own
result. Nothing that follows a change (a thread returning, a message's ack) happens
before the change is durable; if the process dies before the shared commit, nothing
followed and every message is redelivered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from app import db
from app.errors import JobstackError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: What applying a batch gives each of its items: a result, or the error of that item.
ItemOutcome: TypeAlias = R | Exception

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0
#: Most changes in one transaction; more waiting go in the next.
MAX_BATCH = 500

#: Applies a batch in the session's transaction; one outcome per item, in order. An item's
#: own failure is returned as its outcome; an exception raised fails the whole attempt.
ApplyBatch = Callable[[Session, Sequence[T]], list[ItemOutcome[R]]]


class PartlyCommitted(JobstackError):
    """Raised by an apply function that committed some items before ``error`` stopped
    it: ``outcomes`` (by index in the batch) are durable and must not be applied again."""

    def __init__(self, outcomes: dict[int, Any], error: BaseException) -> None:
        super().__init__(f"{len(outcomes)} item(s) committed before: {error!r}")
        self.outcomes = outcomes
        self.error = error


#: Called on the committer's thread with an item's outcome once it is final.
OnDone = Callable[[ItemOutcome[R]], None]


@dataclass(eq=False)
class _Waiting(Generic[T, R]):
    item: T
    deadline: float | None
    on_done: OnDone[R] | None = None
    #: Set once the outcome is final; only for run() (a submitted item has on_done).
    done: threading.Event | None = None
    outcome: ItemOutcome[R] | None = None


class GroupCommitter(Generic[T, R]):
    """Applies items handed over by many threads in shared transactions, on one thread."""

    def __init__(self, apply: ApplyBatch[T, R], *, name: str) -> None:
        self._apply = apply
        self._name = name
        self._queue: queue.SimpleQueue[_Waiting[T, R] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._connection: Connection | None = None
        self._engine: Engine | None = None
        #: Transactions committed by this committer (tests read it).
        self.commits = 0
        # Items handed over and not yet final, for flush().
        self._unfinished = 0
        self._idle = threading.Condition()

    def run(self, item: T, *, give_up_after: float | None) -> R:
        """Apply ``item`` in the next shared transaction; returns once it is committed.

        Raises the item's own error, or the database's once ``give_up_after`` seconds
        passed without a commit (``None`` waits for ever).
        """
        done = threading.Event()
        waiting = self._hand_over(item, give_up_after, None, done)
        done.wait()
        if isinstance(waiting.outcome, Exception):
            raise waiting.outcome
        return waiting.outcome  # type: ignore[return-value]

    def submit(self, item: T, on_done: OnDone[R], *, give_up_after: float | None) -> None:
        """Apply ``item`` in the next shared transaction without waiting for it.

        ``on_done`` is called on the committer's thread with the item's result or error,
        after the commit (or once ``give_up_after`` passed without one). It must not
        block: the batch's other items wait for it.
        """
        self._hand_over(item, give_up_after, on_done)

    def flush(self, timeout: float) -> bool:
        """Wait until every item handed over so far is final; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def _hand_over(
        self,
        item: T,
        give_up_after: float | None,
        on_done: OnDone[R] | None,
        done: threading.Event | None = None,
    ) -> _Waiting[T, R]:
        self._ensure_started()
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        waiting: _Waiting[T, R] = _Waiting(item, deadline, on_done, done)
        with self._idle:
            self._unfinished += 1
        self._queue.put(waiting)
        return waiting

    def stop(self) -> None:
        """Let the thread finish what it holds and close its connection."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    # The committer's thread -----------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # Stop after this batch.
                        break
                    batch.append(more)
                self._commit(batch)
                # Every item of the batch is final now (woken by _commit).
                with self._idle:
                    self._unfinished -= len(batch)
                    if self._unfinished == 0:
                        self._idle.notify_all()
        finally:
            self._disconnect(broken=False)

    def _commit(self, batch: list[_Waiting[T, R]], *, split_on_error: bool = True) -> None:
        """Commit ``batch``, waiting out database outages; wakes every item's thread."""
        pause = FIRST_PAUSE
        while batch:
            try:
                outcomes = self._apply_together(batch)
            except BaseException as raised:
                error = raised
                if isinstance(raised, PartlyCommitted):
                    # Those items are durable: wake them, and never apply them again.
                    for index, outcome in raised.outcomes.items():
                        self._wake(batch[index], outcome)
                    batch = [w for i, w in enumerate(batch) if i not in raised.outcomes]
                    error = raised.error
            else:
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    self._wake(waiting, outcome)
                return
            # A pool timeout: the process holds JOBSTACK_DB_POOL_SIZE + JOBSTACK_DB_MAX_OVERFLOW
            # connections and the committer (re)connecting must wait for one, as for a
            # database that is away; its items must not fail for it.
            if isinstance(error, (OperationalError, InterfaceError, PoolTimeout)):
                self._disconnect(broken=True)
                now = time.monotonic()
                expired = [w for w in batch if w.deadline is not None and now + pause > w.deadline]
                for waiting in expired:
                    self._wake(waiting, error)
                batch = [w for w in batch if w not in expired]
                if batch:
                    logger.error(
                        "Job database unavailable (%s); retrying in %.1fs.",
                        getattr(error, "orig", error),
                        pause,
                    )
                    time.sleep(pause)
                    pause = min(pause * 2, LONGEST_PAUSE)
                continue
            if not isinstance(error, Exception):  # pragma: no cover - interpreter shutdown
                for waiting in batch:
                    self._wake(waiting, RuntimeError(f"group commit stopped: {error!r}"))
                raise error
            if not split_on_error or len(batch) <= 1:
                for waiting in batch:
                    self._wake(waiting, error)
                return
            # Something in the batch broke the shared transaction: apply each item in a
            # transaction of its own, so one bad item fails alone.
            logger.warning("A group commit failed; applying its items one by one.", exc_info=error)
            for waiting in batch:
                self._commit([waiting], split_on_error=False)
            return

    def _apply_together(self, batch: list[_Waiting[T, R]]) -> list[ItemOutcome[R]]:
        with Session(bind=self._connect()) as session:
            try:
                outcomes = self._apply(session, [w.item for w in batch])
                session.commit()
            except BaseException:
                session.rollback()
                raise
        self.commits += 1
        return outcomes

    def _wake(self, waiting: _Waiting[T, R], outcome: ItemOutcome[R]) -> None:
        waiting.outcome = outcome
        if waiting.done is not None:
            waiting.done.set()
        if waiting.on_done is not None:
            try:
                waiting.on_done(outcome)
            except Exception:
                logger.exception("A group commit callback failed.")

    def _connect(self) -> Connection:
        """The committer's connection, kept across batches (no pool checkout, no ping)."""
        engine = db.get_engine()
        if self._connection is not None and self._engine is not engine:
            self._disconnect(broken=False)  # The engine was reconfigured (tests, forks).
        if self._connection is None:
            self._connection = engine.connect()
            self._engine = engine
        return self._connection

    def _disconnect(self, *, broken: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                if broken:
                    connection.invalidate()
                connection.close()
            except Exception:
                logger.debug("Closing the group commit connection failed.", exc_info=True)
