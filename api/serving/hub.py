"""One poller per API process feeds every open event stream.

Hundreds of open streams cost the database the same as one: every
:data:`POLL_SECONDS` the hub reads, in one pass on its own thread, the states of the jobs
being followed and their new events, and hands each stream its share. It also ends the
streams whose token was revoked and keeps their slots (:mod:`api.serving.slots`) fresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select

from api.serving import slots
from app import db
from app.models import Job, JobEvent
from app.states import TERMINAL_STATES

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
#: How often revoked tokens are looked for: a revoked token's streams end within this.
REVOKE_CHECK_SECONDS = 1.0
#: Jobs per query (bounded IN lists).
CHUNK = 200
#: Events read per job per pass at most; the rest come on the next pass.
EVENTS_PER_JOB = 500
TERMINAL = {state.value for state in TERMINAL_STATES}


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    body: dict[str, Any]


@dataclass(eq=False)
class Subscription:
    """One open stream: what it follows, how far it got, and its inbox."""

    job_id: str
    token_id: str
    slot: str
    after: int
    inbox: asyncio.Queue[list[Event] | str] = field(default_factory=asyncio.Queue)
    ended: bool = False

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.inbox.put_nowait(reason)


@dataclass
class _Pass:
    """What one poll read from the database."""

    states: dict[str, str]
    events: dict[str, list[Event]]
    revoked: set[str]


def _read(after_by_job: dict[str, int], tokens: set[str] | None) -> _Pass:
    """Read states first, then events: an event committed with a final state is then
    always seen in the same pass as that state."""
    jobs = list(after_by_job)
    states: dict[str, str] = {}
    events: dict[str, list[Event]] = defaultdict(list)
    with db.session_scope() as session:
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            rows = session.execute(select(Job.id, Job.state).where(Job.id.in_(chunk)))
            states.update((job_id, state) for job_id, state in rows)
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            found = session.scalars(
                select(JobEvent)
                .where(
                    or_(
                        *(and_(JobEvent.job_id == j, JobEvent.seq > after_by_job[j]) for j in chunk)
                    )
                )
                .order_by(JobEvent.job_id, JobEvent.seq)
            )
            for row in found:
                if len(events[row.job_id]) < EVENTS_PER_JOB:
                    events[row.job_id].append(Event(row.seq, row.kind, row.to_dict()))
    revoked = slots.revoked(tokens) if tokens is not None else set()
    return _Pass(states, dict(events), revoked)


class StreamHub:
    """The open streams of this process and the task that feeds them."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        # Its own thread: a pass never waits behind the view threads, nor they behind it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="event-streams")
        self._last_revoke_check = 0.0
        self._last_refresh = time.monotonic()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, job_id: str, token_id: str, slot: str, after: int) -> Subscription:
        subscription = Subscription(job_id, token_id, slot, after)
        self._subscriptions.add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        await self._in_thread(slots.give_back, [subscription.slot])

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run(self) -> None:
        while self._subscriptions:
            try:
                await self._poll()
            except Exception:
                # The database is away: streams wait (and send keep-alives) until it is back.
                logger.exception("Event streams could not read the database")
            await asyncio.sleep(POLL_SECONDS)

    async def _poll(self) -> None:
        following = [s for s in self._subscriptions if not s.ended]
        after_by_job: dict[str, int] = {}
        for subscription in following:
            previous = after_by_job.get(subscription.job_id, subscription.after)
            after_by_job[subscription.job_id] = min(previous, subscription.after)
        now = time.monotonic()
        tokens = None
        if now - self._last_revoke_check >= REVOKE_CHECK_SECONDS:
            tokens = {s.token_id for s in following}
            self._last_revoke_check = now
        found: _Pass = await self._in_thread(_read, after_by_job, tokens)
        self._deliver(following, found)
        if now - self._last_refresh >= slots.REFRESH_SECONDS:
            self._last_refresh = now
            await self._in_thread(slots.refresh, [s.slot for s in self._subscriptions])

    @staticmethod
    def _deliver(following: Iterable[Subscription], found: _Pass) -> None:
        for subscription in following:
            if subscription.token_id in found.revoked:
                subscription.end("token revoked")
                continue
            new = [
                e for e in found.events.get(subscription.job_id, []) if e.seq > subscription.after
            ]
            if new:
                subscription.after = new[-1].seq
                subscription.inbox.put_nowait(new)
                continue
            state = found.states.get(subscription.job_id)
            if state is None:
                subscription.end("job deleted")
            elif state in TERMINAL:
                subscription.end(f"job {state}")
