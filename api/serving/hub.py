"""One poller per API process feeds every open event stream.

Hundreds of open streams cost the database about what one does. Every
:data:`POLL_SECONDS` the hub reads, in one pass on its own thread:

- the state and last event number of every job being followed;
- the *live* events: those after the hub's head of each job (the newest event it has
  handed out), for the streams that are caught up;
- *catch-up* reads for a few streams that are behind (a client resuming from an old
  ``Last-Event-ID``, or one that reads slowly), each a bounded page, taking turns.

A stream that is behind never holds back those that are caught up, nor another tenant's,
and a stream whose client does not read holds at most :data:`MAX_PENDING` pages in
memory: past that it falls behind and is served from the database again once it drains.
The hub also ends the streams whose token was revoked or whose job was deleted, and keeps
their slots (:mod:`api.serving.slots`) fresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
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
#: Live events read per job per pass; more wait for the next pass.
LIVE_PER_JOB = 100
#: Streams served from the database per pass while behind, and events per such read.
CATCH_UPS_PER_PASS = 8
CATCH_UP_PAGE = 200
#: Pages a stream may hold that its client has not taken yet.
MAX_PENDING = 2
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
    #: When it was last served a catch-up page: the longest waiting goes first.
    caught_up_at: float = 0.0

    @property
    def full(self) -> bool:
        return self.inbox.qsize() >= MAX_PENDING

    def give(self, events: list[Event]) -> None:
        self.after = events[-1].seq
        self.inbox.put_nowait(events)

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.inbox.put_nowait(reason)


@dataclass
class _Pass:
    """What one pass read from the database."""

    states: dict[str, tuple[str, int]]
    """Each followed job's state and last event number; a deleted job is missing."""
    heads: dict[str, int]
    """Each job's head before this pass's live events (new jobs: their last event)."""
    live: dict[str, list[Event]]
    catch_up: dict[int, list[Event]]
    """Pages for the streams that were behind, by their index in the request."""
    revoked: set[str]


def _event(row: JobEvent) -> Event:
    return Event(row.seq, row.kind, row.to_dict())


def _read(
    heads: dict[str, int | None], behind: list[tuple[str, int]], tokens: set[str] | None
) -> _Pass:
    """Read states first, then events: an event committed with a final state is then
    seen no later than that state."""
    jobs = list(heads)
    states: dict[str, tuple[str, int]] = {}
    live: dict[str, list[Event]] = defaultdict(list)
    catch_up: dict[int, list[Event]] = {}
    with db.session_scope() as session:
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            rows = session.execute(
                select(Job.id, Job.state, Job.last_event_seq).where(Job.id.in_(chunk))
            )
            states.update((job_id, (state, last)) for job_id, state, last in rows)
        known = {
            job: head if head is not None else states.get(job, ("", 0))[1]
            for job, head in heads.items()
        }
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            found = session.scalars(
                select(JobEvent)
                .where(or_(*(and_(JobEvent.job_id == j, JobEvent.seq > known[j]) for j in chunk)))
                .order_by(JobEvent.job_id, JobEvent.seq)
            )
            for row in found:
                if len(live[row.job_id]) < LIVE_PER_JOB:
                    live[row.job_id].append(_event(row))
        for index, (job, after) in enumerate(behind):
            page = session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job, JobEvent.seq > after, JobEvent.seq <= known[job])
                .order_by(JobEvent.seq)
                .limit(CATCH_UP_PAGE)
            )
            catch_up[index] = [_event(row) for row in page]
    revoked = slots.revoked(tokens) if tokens is not None else set()
    return _Pass(states, known, dict(live), catch_up, revoked)


class StreamHub:
    """The open streams of this process and the task that feeds them."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._heads: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        # Its own thread: a pass never waits behind the view threads, nor they behind it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="event-streams")
        self._last_revoke_check = 0.0
        self._last_refresh = time.monotonic()
        #: Passes done so far (tests wait on it).
        self.passes = 0

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
            self.passes += 1
            await asyncio.sleep(POLL_SECONDS)

    async def _poll(self) -> None:
        following = [s for s in self._subscriptions if not s.ended]
        jobs = {s.job_id for s in following}
        self._heads = {job: head for job, head in self._heads.items() if job in jobs}
        heads: dict[str, int | None] = {job: self._heads.get(job) for job in jobs}
        waiting = sorted(
            (s for s in following if not s.full and self._is_behind(s)),
            key=lambda s: s.caught_up_at,
        )[:CATCH_UPS_PER_PASS]
        now = time.monotonic()
        tokens = None
        if now - self._last_revoke_check >= REVOKE_CHECK_SECONDS:
            tokens = {s.token_id for s in following}
            self._last_revoke_check = now
        behind = [(s.job_id, s.after) for s in waiting]
        found: _Pass = await self._in_thread(_read, heads, behind, tokens)
        for index, subscription in enumerate(waiting):
            subscription.caught_up_at = now
            if found.catch_up.get(index):
                subscription.give(found.catch_up[index])
        self._deliver(following, found)
        if now - self._last_refresh >= slots.REFRESH_SECONDS:
            self._last_refresh = now
            await self._in_thread(slots.refresh, [s.slot for s in self._subscriptions])

    def _is_behind(self, subscription: Subscription) -> bool:
        head = self._heads.get(subscription.job_id)
        return head is None or subscription.after < head

    def _deliver(self, following: list[Subscription], found: _Pass) -> None:
        for subscription in following:
            if subscription.token_id in found.revoked:
                subscription.end("token revoked")
                continue
            job = subscription.job_id
            if job not in found.states:
                subscription.end("job deleted")
                continue
            # Only a stream that stood at the head gets the events after it; one that is
            # behind, or whose client has not taken what it holds, catches up later.
            if subscription.after >= found.heads[job] and not subscription.full:
                live = [e for e in found.live.get(job, []) if e.seq > subscription.after]
                if live:
                    subscription.give(live)
            state, last = found.states[job]
            if state in TERMINAL and subscription.after >= last:
                subscription.end(f"job {state}")
        for job, head in found.heads.items():
            events = found.live.get(job)
            self._heads[job] = events[-1].seq if events else head
