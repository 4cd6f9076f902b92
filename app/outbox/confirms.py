"""Publishing many messages to RabbitMQ with one wait for all their confirms.

Dramatiq's ``enqueue`` with ``confirm_delivery`` waits for RabbitMQ's confirm of each
message before sending the next: a round trip per message. Here every message of a
batch is sent first, then the confirms (which RabbitMQ may give for many at once) are
awaited together. Unroutable messages (``mandatory``) come back and count as failed.

pika's blocking adapter has no such API, so this drives the asynchronous channel under a
:class:`pika.BlockingChannel` (``_impl``), a part of pika 1.x that has not changed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import pika
import pika.channel
import pika.frame
import pika.spec
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from app.errors import JobstackError
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

#: Longest wait for the confirms of one batch.
CONFIRM_TIMEOUT = 30.0


class PublishFailed(JobstackError):
    """RabbitMQ refused (nacked or returned) a message, or did not confirm in time."""


class Confirmed(NamedTuple):
    """A message RabbitMQ confirmed, and the moment it was sent.

    The moment of sending, not of the confirm's arrival: RabbitMQ confirms a persistent
    message once it is on disk or acked by its consumer, and jobstack's consumers ack
    after the job's outcome is committed, so a confirm can arrive after the job finished.
    The message was in RabbitMQ from the moment it was sent; the confirm proves it.
    """

    message_id: str
    at: datetime


@dataclass
class _ConfirmingChannel:
    connection: pika.BlockingConnection
    channel: pika.channel.Channel
    next_tag: int = 1
    waiting: dict[int, str] = field(default_factory=dict)  # delivery tag -> message id
    failed: set[str] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)

    def on_confirm(self, frame: pika.frame.Method[Any]) -> None:
        method = frame.method
        tags = (
            [tag for tag in self.waiting if tag <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for tag in tags:
            message_id = self.waiting.pop(tag, None)
            if message_id is not None:
                (self.failed if nacked else self.confirmed).add(message_id)

    def on_return(
        self,
        _channel: pika.channel.Channel,
        _method: pika.spec.Basic.Return,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        if properties.message_id:
            self.failed.add(properties.message_id)


class ConfirmedPublisher:
    """One confirming channel per thread (and process) on the broker's connection
    parameters."""

    def __init__(self, broker: RabbitmqBroker) -> None:
        self._broker = broker
        self._local = threading.local()

    def publish(self, messages: Sequence[Message[Any]]) -> list[Confirmed]:
        """Publish ``messages``; returns those RabbitMQ confirmed, in order, up to the
        first one it did not (the caller leaves the rest to the relay)."""
        broker = self._broker
        for queue in {message.queue_name for message in messages}:
            broker.declare_queue(queue, ensure=True)
        try:
            state = self._channel()
            state.confirmed.clear()
            state.failed.clear()
            sent_at: dict[str, datetime] = {}
            for message in messages:
                broker.emit_before("enqueue", message, None)
                sent_at[message.message_id] = utcnow()
                state.waiting[state.next_tag] = message.message_id
                state.next_tag += 1
                state.channel.basic_publish(
                    exchange="",
                    routing_key=message.queue_name,
                    body=message.encode(),
                    properties=pika.BasicProperties(
                        delivery_mode=2,
                        priority=message.options.get("broker_priority"),
                        message_id=message.message_id,
                    ),
                    mandatory=True,
                )
            _wait(state.connection, lambda: not state.waiting, "the confirms of the messages")
        except Exception:
            self._forget()
            raise
        published: list[Confirmed] = []
        for message in messages:
            if message.message_id in state.failed or message.message_id not in state.confirmed:
                break
            broker.emit_after("enqueue", message, None)
            published.append(Confirmed(message.message_id, sent_at[message.message_id]))
        return published

    def _channel(self) -> _ConfirmingChannel:
        # A channel of its own on the broker's connection of this thread: the broker
        # owns (and on close, or after an error, closes) the connection.
        connection = self._broker.connection
        state: _ConfirmingChannel | None = getattr(self._local, "state", None)
        if state is not None and state.connection is connection and state.channel.is_open:
            return state
        channel = connection.channel()._impl
        state = _ConfirmingChannel(connection, channel)
        selected = threading.Event()
        channel.confirm_delivery(state.on_confirm, lambda _frame: selected.set())
        channel.add_on_return_callback(state.on_return)
        _wait(connection, selected.is_set, "publisher confirms to be turned on")
        self._local.state = state
        return state

    def _forget(self) -> None:
        """After an error: drop the channel and the broker's connection of this thread,
        as Dramatiq does, so that the next publish starts afresh."""
        self._local.state = None
        del self._broker.connection


def _wait(connection: pika.BlockingConnection, done: Callable[[], bool], what: str) -> None:
    """Run the connection's I/O until ``done()``; PublishFailed after CONFIRM_TIMEOUT.

    ``_flush_output`` is how pika's own blocking channel waits for its replies: it
    returns as soon as a waiter is satisfied, without polling on a timer.
    """
    expired = threading.Event()
    timer = connection.call_later(CONFIRM_TIMEOUT, expired.set)
    try:
        connection._flush_output(done, expired.is_set)
    finally:
        connection.remove_timeout(timer)
    if not done():
        raise PublishFailed(f"RabbitMQ did not send {what} within {CONFIRM_TIMEOUT}s")


_publishers: dict[int, ConfirmedPublisher] = {}
_publishers_lock = threading.Lock()


def publisher_for(broker: RabbitmqBroker) -> ConfirmedPublisher:
    with _publishers_lock:
        publisher = _publishers.get(id(broker))
        if publisher is None:
            publisher = _publishers[id(broker)] = ConfirmedPublisher(broker)
        return publisher
