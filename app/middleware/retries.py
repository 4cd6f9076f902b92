"""Dramatiq's Retries with jobstack's defaults and its PermanentError."""

from __future__ import annotations

from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Retries

from app.errors import JobCancelled, PermanentError

DEFAULT_MAX_RETRIES = 3
DEFAULT_MIN_BACKOFF_MS = 15_000
#: Retry delays are held as unacked messages by workers, so they stay well below
#: RabbitMQ's consumer timeout (30 minutes by default).
MAX_BACKOFF_CAP_MS = 600_000


class JobRetries(Retries):
    """Exponential backoff with jitter, capped at 10 minutes; PermanentError fails at once."""

    def __init__(self) -> None:
        super().__init__(
            max_retries=DEFAULT_MAX_RETRIES,
            min_backoff=DEFAULT_MIN_BACKOFF_MS,
            max_backoff=MAX_BACKOFF_CAP_MS,
        )

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if isinstance(exception, JobCancelled):
            return  # Neither retried nor dead-lettered: the message is acked.
        if isinstance(exception, PermanentError):
            self.logger.info("Permanent failure of message %r; not retrying.", message.message_id)
            message.fail()
            return
        if exception is not None:
            actor = broker.get_actor(message.actor_name)
            for option, default in (
                ("min_backoff", self.min_backoff),
                ("max_backoff", self.max_backoff),
            ):
                wanted = message.options.get(option, actor.options.get(option, default))
                message.options[option] = min(wanted, MAX_BACKOFF_CAP_MS)
        super().after_process_message(  # type: ignore[no-untyped-call]
            broker, message, result=result, exception=exception
        )
