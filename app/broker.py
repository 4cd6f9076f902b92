"""The process's Dramatiq broker and its middleware stack.

This is the one module that reads configuration at import time: Dramatiq binds actors
to the broker that exists when they are declared, so ``actors`` imports this first.
Its settings reach the middleware through their constructors, here; nothing below reads
the environment.
"""

from __future__ import annotations

import random
import re
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import dramatiq
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker, _RabbitmqConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    MiddlewareError,
    Pipelines,
    ShutdownNotifications,
)

from app.config import Settings, load_settings
from app.defaults import MAX_PRIORITY, STANDARD_QUEUES
from app.errors import ConfigurationError
from app.middleware.actor_options import JobstackActorOptions
from app.middleware.cancellation import Cancellation
from app.middleware.heartbeat import WorkerHeartbeat
from app.middleware.job_logging import JobLogging
from app.middleware.periodic import JobPeriodiq
from app.middleware.relay import OutboxRelay
from app.middleware.retries import JobRetries
from app.middleware.time_limit import CappedTimeLimit
from app.middleware.tracking import Tracking
from app.observability import tracing_middleware
from app.observability import worker_middleware as observability_middleware
from app.observability.error_reports import init_error_reports
from app.rabbitmq.nodes import amqp_urls
from app.rabbitmq.queue_arguments import (
    CLASSIC,
    QUEUE_TYPES,
    dead_letter_queue_arguments,
    delay_queue_arguments,
    job_queue_arguments,
)
from app.rabbitmq.quiet_close import closing_quietly
from app.recording.acks import AckAfterCommitConsumer
from app.recording.claims import ClaimingConsumer, ClaimStarts, wait_for_claimed


def build_middleware(settings: Settings | None = None) -> list[Middleware]:
    """jobstack's middleware, in the order Dramatiq runs their ``before_*`` hooks, each
    given its part of ``settings`` (default: read from the environment now).

    ``after_*`` hooks run in reverse, so Tracking, first, has the last word: JobRetries
    has decided (retry or fail), TimeLimit has disarmed its timer (it cannot interrupt
    the commit), and the commit happens before the ack.
    """
    settings = settings or load_settings()
    return [
        *tracing_middleware(settings),
        Tracking(start_patience=settings.db_retry_seconds),
        *observability_middleware(settings),
        AgeLimit(),
        CappedTimeLimit(cap_seconds=settings.max_time_limit),
        ShutdownNotifications(),
        CurrentMessage(),
        Callbacks(),
        Pipelines(),
        JobPeriodiq(),
        JobstackActorOptions(),
        JobLogging(json_lines=settings.log_format == "json"),
        OutboxRelay(settings),
        WorkerHeartbeat(interval=settings.heartbeat_interval),
        JobRetries(),
        Cancellation(
            grace=settings.cancel_grace,
            poll_interval=settings.cancel_poll_interval,
            broadcast=settings.cancel_broadcast,
        ),
    ]


#: An operator's queue name: no dots, so never one of the .DQ or .XQ queues beside it.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JobstackRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker whose consumers hold each ack until the job's outcome
    is committed (:mod:`app.recording.acks`) and, in a worker, start jobs in batches as
    their messages arrive (:mod:`app.recording.claims`)."""

    #: Read by the tracking middleware: acks here wait for the commit's gate.
    acks_wait_for_commits = True

    def __init__(
        self,
        *,
        idle_connection_seconds: float,
        queue_type: str = CLASSIC,
        delivery_limit: int = 20,
        **options: Any,
    ) -> None:
        # Before Dramatiq's __init__, which already emits signals (see _hooks).
        self._hooks_stack: tuple[Middleware, ...] = ()
        self._hooks_by_name: dict[str, list[Callable[..., None]]] = {}
        self._node_parameters: list[Any] = []
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        super().__init__(**options)
        self.idle_connection_seconds = idle_connection_seconds
        #: Set by the tracking middleware as a worker boots: hands a delivered message's
        #: start to the group committer. None (API, scheduler): nothing is claimed.
        self.claim_starts: ClaimStarts | None = None
        #: The worker's threads: how many jobs a consumer claims ahead.
        self.worker_threads = 1
        #: Called with each claimed job's id (the cancellation registry watches them).
        self.claim_watchers: list[Callable[[str], None]] = []
        self._claiming: weakref.WeakSet[ClaimingConsumer] = weakref.WeakSet()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        """A consumer that claims starts as messages arrive, on a worker's job queues.

        Delay queues keep Dramatiq's consumer: their messages wait in the worker for
        their eta and are sent on to the job queue, where they are claimed.
        """
        if self.claim_starts is None or q_name(queue_name) != queue_name:
            return super().consume(queue_name, prefetch, timeout)
        self.declare_queue(queue_name, ensure=True)
        consumer = ClaimingConsumer(
            self,
            queue_name,
            prefetch,
            timeout,
            claim_starts=self.claim_starts,
            threads=self.worker_threads,
            on_claimed=self._claimed,
        )
        self._claiming.add(consumer)
        return consumer

    def _claimed(self, job_id: str) -> None:
        for watcher in self.claim_watchers:
            watcher(job_id)

    def finish_claimed(self, timeout: float) -> bool:
        """Stop claiming and wait until worker threads took every claimed job."""
        return wait_for_claimed(list(self._claiming), timeout)

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_before``, calling only the middleware that define the hook."""
        for hook in self._hooks("before_" + signal):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical(
                    "Unexpected failure in before_%s of %r.", signal, hook, exc_info=True
                )

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """Dramatiq's ``emit_after`` (last middleware first), likewise."""
        for hook in self._hooks("after_" + signal):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical(
                    "Unexpected failure in after_%s of %r.", signal, hook, exc_info=True
                )

    def _hooks(self, name: str) -> list[Callable[..., None]]:
        """The bound ``name`` hooks of the middleware that override Middleware's no-op,
        in the order they run; rebuilt whenever the middleware list changes.

        A message passes through about six signals and the stack holds eighteen
        middleware, most without the hook: calling every one cost a worker ~6 % of its
        time per no-op job.
        """
        stack = tuple(self.middleware)
        if stack != self._hooks_stack:
            self._hooks_stack, self._hooks_by_name = stack, {}
        hooks = self._hooks_by_name.get(name)
        if hooks is None:
            base = getattr(Middleware, name, None)
            ordered = stack if name.startswith("before_") else tuple(reversed(stack))
            hooks = [
                getattr(middleware, name)
                for middleware in ordered
                if getattr(type(middleware), name, None) is not base
            ]
            self._hooks_by_name[name] = hooks
        return hooks

    @property
    def connection(self) -> Any:
        """The thread's connection, replaced first if it has been idle too long.

        A pika BlockingConnection answers heartbeats only while it is used: an API thread
        that published nothing for two heartbeat intervals holds a connection RabbitMQ has
        already dropped, and its next publish would fail. Closing and reopening it before
        use costs one connection set-up after an idle spell, never a failed request.
        """
        self._drop_if_idle()
        return super().connection

    @connection.deleter
    def connection(self) -> None:
        RabbitmqBroker.connection.fdel(self)  # type: ignore[attr-defined]

    @property
    def channel(self) -> Any:
        """The thread's channel, on a connection replaced first if it has been idle too long.

        Dramatiq hands out a thread's cached channel without reading ``connection``: an
        operator's queue listing after a quiet spell used the channel of a connection
        RabbitMQ had dropped, and failed with StreamLostError.
        """
        self._drop_if_idle()
        return RabbitmqBroker.channel.fget(self)  # type: ignore[attr-defined]

    @channel.deleter
    def channel(self) -> None:
        RabbitmqBroker.channel.fdel(self)  # type: ignore[attr-defined]

    def _drop_if_idle(self) -> None:
        now = time.monotonic()
        last_used = getattr(self.state, "connection_used_at", now)
        if now - last_used > self.idle_connection_seconds:
            with closing_quietly(self.logger):
                del self.connection
        self.state.connection_used_at = now

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return AckAfterCommitConsumer

    @property
    def parameters(self) -> Any:
        """The nodes' connection parameters, in a new random order for each connection.

        pika tries a list in order: every process starting with the first node would put
        every connection on it, and a reconnect would find the dead node first again.
        Shuffled, connections spread over the cluster and a lost one fails over to any
        node that answers. Every broker and consumer connection reads this.
        """
        nodes = list(self._node_parameters)
        random.shuffle(nodes)
        return nodes

    @parameters.setter
    def parameters(self, value: Any) -> None:
        self._node_parameters = list(value) if isinstance(value, list | tuple) else [value]

    def _declare_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=queue_name,
            durable=True,
            arguments=job_queue_arguments(
                queue_name,
                queue_type=self.queue_type,
                max_priority=self.max_priority,
                delivery_limit=self.delivery_limit,
            ),
        )

    def _declare_dq_queue(self, queue_name: str) -> Any:
        arguments = delay_queue_arguments(
            queue_name, queue_type=self.queue_type, max_priority=self.max_priority
        )
        return self.channel.queue_declare(
            queue=dq_name(queue_name), durable=True, arguments=arguments
        )

    def _declare_xq_queue(self, queue_name: str) -> Any:
        arguments = dead_letter_queue_arguments(
            queue_type=self.queue_type, message_ttl_ms=DEAD_MESSAGE_TTL
        )
        return self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments=arguments
        )

    def _ensure_queue(self, canonical_queue_name: str) -> None:
        try:
            super()._ensure_queue(canonical_queue_name)  # type: ignore[no-untyped-call]
        except ConnectionClosed as error:
            if "inequivalent arg" in str(error):
                self.logger.error(
                    "Queue %s exists in RabbitMQ with other arguments than %s queues get "
                    "(JOBSTACK_QUEUE_TYPE=%s): a queue's type cannot change. Use a new "
                    "vhost for the new type and drain the old one (docs/scaling.md).",
                    canonical_queue_name,
                    self.queue_type,
                    self.queue_type,
                )
            raise


def create_broker(settings: Settings) -> dramatiq.Broker:
    """A RabbitMQ broker with publisher confirms, priority queues and acks that wait for
    the job's commit (:mod:`app.recording.acks`), or the stub broker."""
    broker: dramatiq.Broker
    if settings.broker_url.startswith("stub://"):
        broker = StubBroker(middleware=build_middleware(settings))
    else:
        if settings.queue_type not in QUEUE_TYPES:
            raise ConfigurationError(
                f"JOBSTACK_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, "
                f"not {settings.queue_type!r}"
            )
        urls = amqp_urls(settings)
        heartbeat = min(float(dict(parse_qsl(urlsplit(url).query))["heartbeat"]) for url in urls)
        broker = JobstackRabbitmqBroker(
            # Well before RabbitMQ gives up on a silent client (two missed heartbeats);
            # heartbeat=0 turns heartbeats off, and idle connections then stay up.
            idle_connection_seconds=heartbeat / 2 if heartbeat > 0 else float("inf"),
            url=urls,
            confirm_delivery=True,
            # Classic queues only: queue arguments cannot change once a queue exists, so
            # x-max-priority is fixed now for every queue (per-job priorities 0–9).
            max_priority=MAX_PRIORITY,
            queue_type=settings.queue_type,
            delivery_limit=settings.quorum_delivery_limit,
            middleware=build_middleware(settings),
        )
    for queue in (*STANDARD_QUEUES, *configured_queues(settings)):
        broker.declare_queue(queue)
    return broker


def configured_queues(settings: Settings) -> list[str]:
    """The operator's extra queues (JOBSTACK_QUEUES)."""
    names = [name.strip() for name in settings.queues.split(",") if name.strip()]
    for name in names:
        if not QUEUE_NAME.fullmatch(name):
            raise ConfigurationError(
                f"JOBSTACK_QUEUES: {name!r} must be 1-64 letters, digits, '_' or '-'"
            )
    return names


# Sentry's Dramatiq integration patches Broker.__init__: it starts before the broker.
init_error_reports(load_settings())
broker = create_broker(load_settings())
dramatiq.set_broker(broker)
