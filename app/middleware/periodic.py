"""periodiq's middleware, made safe for retried and tracked periodic jobs.

periodiq skips a tick message older than ``skip_delay`` seconds, judged by the tick's
``scheduled_at``. A retry or a redelivery of that tick carries the same ``scheduled_at``
and would be dropped too; here only a tick's first attempt can be skipped as stale.
"""

from __future__ import annotations

import pendulum
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from periodiq import PeriodiqMiddleware

from app.context import current_job_or_none

# Schedules are in UTC whatever the host's zone: periodiq reads "now" from pendulum's
# local timezone, which every jobstack process pins here.
pendulum.set_local_timezone(pendulum.UTC)

#: A tick that waited longer than this in the queue is skipped (periodiq's default).
STALE_TICK_SECONDS = 30


class JobPeriodiq(PeriodiqMiddleware):  # type: ignore[misc]
    """PeriodiqMiddleware whose stale-tick skip applies to a tick's first attempt only."""

    def __init__(self) -> None:
        super().__init__(skip_delay=STALE_TICK_SECONDS)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        job = current_job_or_none()  # Set by Tracking, earlier in the list.
        if job is not None and job.attempt > 1:
            return
        super().before_process_message(broker, message)
