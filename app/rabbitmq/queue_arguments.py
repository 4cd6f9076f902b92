"""The arguments of the queues jobstack declares: classic queues or quorum queues.

Each job queue ``Q`` has a delay queue ``Q.DQ`` and a dead-letter queue ``Q.XQ`` beside
it (Dramatiq's layout). Arguments cannot change once a queue exists, and RabbitMQ refuses
to re-declare a classic queue as quorum or back (``406 inequivalent arg 'x-queue-type'``):
switching a running system means a new vhost (docs/scaling.md).
"""

from __future__ import annotations

from typing import Any

from dramatiq.common import xq_name

CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)

#: The delivery limit of quorum queues whose messages never run: a delay queue's wait inside
#: workers until their eta and every worker restart hands them back, which a quorum queue
#: counts as a delivery; a dead letter may be fetched by hand from RabbitMQ's UI. There is
#: no poison to stop, so the limit is set out of reach rather than left to the server's
#: default (20 from RabbitMQ 4.0). -1, "no limit" in 4.x, drops a message on its first
#: return in 3.10 (measured on 3.10.8), so it is never used.
OUT_OF_REACH_DELIVERY_LIMIT = 1_000_000_000


def _dead_lettered_to(queue_name: str) -> dict[str, Any]:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}


def _quorum(delivery_limit: int | None) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": QUORUM,
        # At-least-once dead-lettering keeps a rejected message in its queue until the
        # dead-letter queue has it (the default, at-most-once, may lose it on a node
        # failure); RabbitMQ requires reject-publish overflow for it.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    return arguments


def job_queue_arguments(
    queue_name: str, *, queue_type: str, max_priority: int | None, delivery_limit: int
) -> dict[str, Any]:
    """``Q``'s arguments: failed messages go to ``Q.XQ``.

    Classic queues carry per-message priorities (``x-max-priority``), which a quorum queue
    refuses. A quorum queue counts every return of a message (a worker that died, a
    consumer that closed with messages in its prefetch) and dead-letters it past
    ``delivery_limit``; jobstack's own poison rule (JOBSTACK_POISON_DEATHS) acts first,
    and a message dead-lettered by RabbitMQ itself fails its job when the dead letters are
    swept (:func:`app.operations.dead_letters.sweep`).
    """
    arguments = _dead_lettered_to(queue_name)
    if queue_type == QUORUM:
        arguments.update(_quorum(delivery_limit))
    elif max_priority:
        arguments["x-max-priority"] = max_priority
    return arguments


def delay_queue_arguments(
    queue_name: str, *, queue_type: str, max_priority: int | None
) -> dict[str, Any]:
    """``Q.DQ``'s arguments (``queue_name`` is ``Q``): like ``Q``'s, with a delivery limit
    out of reach."""
    return job_queue_arguments(
        queue_name,
        queue_type=queue_type,
        max_priority=max_priority,
        delivery_limit=OUT_OF_REACH_DELIVERY_LIMIT,
    )


def dead_letter_queue_arguments(*, queue_type: str, message_ttl_ms: int) -> dict[str, Any]:
    """``Q.XQ``'s arguments: dead letters expire after ``message_ttl_ms``, oldest first.

    Listing dead letters on a quorum queue files each one back as a new message
    (:mod:`app.operations.dead_letters`), so listing counts no delivery; the limit out of
    reach covers letters fetched by other tools.
    """
    arguments: dict[str, Any] = {"x-message-ttl": message_ttl_ms}
    if queue_type == QUORUM:
        arguments["x-queue-type"] = QUORUM
        arguments["x-delivery-limit"] = OUT_OF_REACH_DELIVERY_LIMIT
    return arguments
