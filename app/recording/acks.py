"""Acks that wait for the job's new state to be committed, without holding a thread.

Dramatiq acks (or nacks) a message as soon as its worker thread has run every
``after_process_message`` hook. jobstack's rule is that the job's new state is durable
before the message leaves RabbitMQ; waiting for the commit inside the hook would keep
the worker thread idle for a whole group-commit cycle per message. Instead the tracking
middleware hands the outcome to the group committer, attaches an :class:`AfterCommit`
gate to the message and returns; the consumer below holds the message's ack or nack at
that gate until the committer opens it. If the process dies first, the message was never
acked and RabbitMQ delivers it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer

logger = logging.getLogger(__name__)

_GATE_ATTRIBUTE = "_jobstack_after_commit"


class AfterCommit:
    """Holds one action (an ack or a nack) until :meth:`open` is called."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._held: Callable[[], None] | None = None

    def run_after(self, action: Callable[[], None]) -> None:
        """Run ``action`` now if the gate is open, else when it opens."""
        with self._lock:
            if not self._open:
                self._held = action
                return
        action()

    def open(self) -> None:
        """Open the gate, running the held action (on the caller's thread)."""
        with self._lock:
            self._open = True
            action, self._held = self._held, None
        if action is not None:
            action()


def hold_ack_until(message: MessageProxy, gate: AfterCommit) -> None:
    """Make the ack or nack of ``message`` wait for ``gate``."""
    setattr(message, _GATE_ATTRIBUTE, gate)


def _gate_of(message: MessageProxy) -> AfterCommit | None:
    gate: AfterCommit | None = message.__dict__.get(_GATE_ATTRIBUTE)
    return gate


class AckAfterCommitConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, with acks and nacks held at the message's gate.

    Acks were already asynchronous in Dramatiq (a callback handed to the consumer's
    connection thread); a held one is handed over from the committer's thread instead.
    """

    def ack(self, message: MessageProxy) -> None:
        self._after_gate(message, super().ack)

    def nack(self, message: MessageProxy) -> None:
        self._after_gate(message, super().nack)

    def _after_gate(self, message: MessageProxy, settle: Callable[[Any], None]) -> None:
        gate = _gate_of(message)
        if gate is None:
            settle(message)
            return

        def settle_later() -> None:
            try:
                settle(message)
            except Exception:
                # The consumer's connection is gone: RabbitMQ delivers the message again,
                # and the worker that gets it finds the job already moved on.
                logger.warning(
                    "Could not settle message %s; it will be redelivered.",
                    message.message_id,
                    exc_info=True,
                )

        gate.run_after(settle_later)
