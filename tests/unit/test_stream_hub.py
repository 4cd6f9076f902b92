"""The hub that feeds event streams: a stream that is behind, or whose client does not
read, neither holds back the others nor piles events up in memory."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from api.serving import hub as hub_module
from api.serving.hub import CATCH_UP_PAGE, MAX_PENDING, StreamHub, Subscription
from app import db
from app.models import Job, JobEvent
from app.timeutil import utcnow
from app.tokens import create_token, list_tokens
from tests.support.factories import make_job


def _add_progress(job_id: str, count: int) -> int:
    """Append ``count`` progress events; returns the last event number."""
    with db.session_scope() as session:
        last = session.get(Job, job_id).last_event_seq  # type: ignore[union-attr]
        now = utcnow()
        session.add_all(
            JobEvent(
                job_id=job_id, seq=last + n, at=now, kind="progress", data={"percent": n % 100}
            )
            for n in range(1, count + 1)
        )
        session.execute(update(Job).where(Job.id == job_id).values(last_event_seq=last + count))
    return last + count


def _token() -> str:
    """The id of a new, valid token (the hub ends the streams of revoked ones)."""
    create_token("acme", {"jobs:read"})
    return list_tokens()[-1].id


async def _passes(hub: StreamHub, count: int) -> None:
    """Wait until the hub's own task has made ``count`` more passes."""
    until = hub.passes + count
    while hub.passes < until:
        await asyncio.sleep(0.01)


def _pending_events(subscription: Subscription) -> int:
    items = list(subscription.inbox._queue)  # type: ignore[attr-defined]
    return sum(len(item) for item in items if isinstance(item, list))


def test_a_client_that_does_not_read_holds_at_most_a_few_pages(clean_db: str) -> None:
    job_id = make_job()
    last = _add_progress(job_id, 5_000)

    async def scenario() -> Subscription:
        hub = StreamHub()
        subscription = hub.subscribe(job_id, _token(), "slot", after=0)
        await _passes(hub, 10)  # Nobody takes anything from the inbox.
        return subscription

    subscription = asyncio.run(scenario())
    assert subscription.inbox.qsize() <= MAX_PENDING
    assert _pending_events(subscription) <= MAX_PENDING * CATCH_UP_PAGE < last
    assert subscription.after == _pending_events(subscription)  # In order, from the first.
    assert not subscription.ended


def test_a_stream_replaying_history_does_not_delay_one_that_is_caught_up(
    clean_db: str,
) -> None:
    job_id = make_job()
    history = _add_progress(job_id, 3_000)

    async def scenario() -> tuple[Subscription, Subscription]:
        hub = StreamHub()
        live = hub.subscribe(job_id, _token(), "slot-a", after=history)
        replaying = hub.subscribe(job_id, _token(), "slot-b", after=0)
        await _passes(hub, 1)
        _add_progress(job_id, 1)  # A new event while the replay has far to go.
        await _passes(hub, 1)
        return live, replaying

    live, replaying = asyncio.run(scenario())
    assert live.after == history + 1  # Delivered on the next pass.
    assert replaying.after < history  # Still catching up, page by page.


def test_a_lagging_stream_is_served_in_turn_with_others(clean_db: str) -> None:
    jobs = [make_job() for _ in range(hub_module.CATCH_UPS_PER_PASS + 2)]
    for job_id in jobs:
        _add_progress(job_id, CATCH_UP_PAGE * 3)

    async def scenario() -> list[Subscription]:
        hub = StreamHub()
        token = _token()
        subscriptions = [hub.subscribe(j, token, f"s{i}", after=0) for i, j in enumerate(jobs)]
        for _ in range(3):
            await _passes(hub, 1)
            for subscription in subscriptions:  # The clients read everything.
                while not subscription.inbox.empty():
                    subscription.inbox.get_nowait()
        return subscriptions

    subscriptions = asyncio.run(scenario())
    assert all(subscription.after > 0 for subscription in subscriptions)
