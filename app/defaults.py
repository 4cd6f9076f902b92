"""Policy defaults in one place: queues, priorities, retries, backoff and time limits.

Actors override the per-job values with Dramatiq's own options (``queue_name``,
``max_retries``, ``min_backoff``, ``max_backoff``, ``time_limit``); the caps hold whatever
an actor asks. Process settings read from the environment live in :mod:`app.config`.
"""

from __future__ import annotations

#: Queues every worker consumes out of the box. Run dedicated workers for one of them
#: with ``dramatiq actors -Q critical``: Dramatiq does not order queues among themselves.
STANDARD_QUEUES = ("critical", "default", "low")

#: Highest per-job priority; queues are declared with ``x-max-priority`` equal to it.
MAX_PRIORITY = 9

#: Retries of a failing job before it fails for good and is dead-lettered.
DEFAULT_MAX_RETRIES = 3

#: Backoff before the first retry, in milliseconds; it doubles with each retry (with jitter).
DEFAULT_MIN_BACKOFF_MS = 15_000

#: Longest backoff, in milliseconds, whatever an actor asks. Retry delays are held as
#: unacked messages by workers, so they stay well below RabbitMQ's consumer timeout
#: (30 minutes by default).
MAX_BACKOFF_CAP_MS = 600_000

#: Default time limit of an attempt, in milliseconds; an attempt over it fails as a
#: timeout. ``JOBSTACK_MAX_TIME_LIMIT`` caps every actor's own limit.
DEFAULT_TIME_LIMIT_MS = 600_000

#: Tenants of the jobs jobstack submits itself (the CLI, cron ticks): no API token may
#: belong to one, or it would see those jobs and could pre-empt a cron tick's key.
RESERVED_TENANTS = frozenset({"default", "system"})

#: Idempotency keys of the jobs jobstack submits itself: cron ticks use
#: ``cron:<actor>:<minute>``. Only the internal tenant may submit one.
CRON_KEY_PREFIX = "cron:"
RESERVED_KEY_PREFIXES = (CRON_KEY_PREFIX,)
