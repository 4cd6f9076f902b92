"""Dramatiq's Retries with jobstack's defaults and its PermanentError."""

from __future__ import annotations

from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Retries

from app.defaults import DEFAULT_MAX_RETRIES, DEFAULT_MIN_BACKOFF_MS, MAX_BACKOFF_CAP_MS
from app.errors import JobCancelled, PermanentError


class JobRetries(Retries):
    """Exponential backoff with jitter, capped at 10 minutes; PermanentError fails at once."""

    def __init__(
        self,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        min_backoff: int = DEFAULT_MIN_BACKOFF_MS,
        max_backoff: int = MAX_BACKOFF_CAP_MS,
    ) -> None:
        super().__init__(max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff)

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
