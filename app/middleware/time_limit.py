"""Dramatiq's TimeLimit, capped below RabbitMQ's consumer timeout."""

from __future__ import annotations

import threading

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import TimeLimit

from app.defaults import DEFAULT_TIME_LIMIT_MS


class CappedTimeLimit(TimeLimit):
    """A running message is unacked: RabbitMQ closes the channel of a consumer that holds
    one past its ``consumer_timeout`` (30 minutes by default) and delivers the message
    again, so no attempt may run longer than ``JOBSTACK_MAX_TIME_LIMIT`` seconds."""

    def __init__(self, *, cap_seconds: float, time_limit: int = DEFAULT_TIME_LIMIT_MS) -> None:
        super().__init__(time_limit=time_limit)
        self.cap_ms = cap_seconds * 1000

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        wanted = message.options.get("time_limit") or actor.options.get(
            "time_limit", self.time_limit
        )
        self.manager.add_timeout(  # type: ignore[no-untyped-call]
            threading.get_ident(), min(wanted, self.cap_ms)
        )
