"""Dramatiq's TimeLimit, capped below RabbitMQ's consumer timeout."""

from __future__ import annotations

import threading

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import TimeLimit

from app.config import load_settings

#: Default time limit of an attempt; an attempt over it fails as a timeout.
DEFAULT_TIME_LIMIT_MS = 600_000


class CappedTimeLimit(TimeLimit):
    """A running message is unacked: RabbitMQ closes the channel of a consumer that holds
    one past its ``consumer_timeout`` (30 minutes by default) and delivers the message
    again, so no attempt may run longer than ``JOBSTACK_MAX_TIME_LIMIT`` seconds."""

    def __init__(self) -> None:
        super().__init__(time_limit=DEFAULT_TIME_LIMIT_MS)
        self.cap_ms = load_settings().max_time_limit * 1000

    def after_process_boot(self, broker: Broker) -> None:
        self.cap_ms = load_settings().max_time_limit * 1000
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        wanted = message.options.get("time_limit") or actor.options.get(
            "time_limit", self.time_limit
        )
        self.manager.add_timeout(  # type: ignore[no-untyped-call]
            threading.get_ident(), min(wanted, self.cap_ms)
        )
