"""The process's Dramatiq broker and its middleware stack.

This is the one module that reads configuration at import time: Dramatiq binds actors
to the broker that exists when they are declared, so ``actors`` imports this first.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    ShutdownNotifications,
)

from app.acks import JobstackRabbitmqBroker
from app.config import Settings, load_settings
from app.jobs import MAX_PRIORITY
from app.middleware.actor_options import JobstackActorOptions
from app.middleware.cancellation import Cancellation
from app.middleware.heartbeat import WorkerHeartbeat
from app.middleware.job_logging import JobLogging
from app.middleware.periodic import JobPeriodiq
from app.middleware.relay import OutboxRelay
from app.middleware.retries import JobRetries
from app.middleware.time_limit import CappedTimeLimit
from app.middleware.tracking import Tracking


def build_middleware() -> list[Middleware]:
    """jobstack's middleware, in the order Dramatiq runs their ``before_*`` hooks.

    ``after_*`` hooks run in reverse, so Tracking, first, has the last word: JobRetries
    has decided (retry or fail), TimeLimit has disarmed its timer (it cannot interrupt
    the commit), and the commit happens before the ack.
    """
    return [
        Tracking(),
        AgeLimit(),
        CappedTimeLimit(),
        ShutdownNotifications(),
        CurrentMessage(),
        Callbacks(),
        Pipelines(),
        JobPeriodiq(),
        JobstackActorOptions(),
        JobLogging(),
        OutboxRelay(),
        WorkerHeartbeat(),
        JobRetries(),
        Cancellation(),
    ]


def amqp_url(settings: Settings) -> str:
    """The broker URL with jobstack's heartbeat and blocked-connection timeout.

    Values already in the URL's query string win.
    """
    parts = urlsplit(settings.broker_url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("heartbeat", str(settings.broker_heartbeat))
    query.setdefault("blocked_connection_timeout", str(settings.broker_blocked_timeout))
    return urlunsplit(parts._replace(query=urlencode(query)))


#: Queues every worker consumes out of the box. Run dedicated workers for one of them
#: with ``dramatiq actors -Q critical``: Dramatiq does not order queues among themselves.
STANDARD_QUEUES = ("critical", "default", "low")


def create_broker(settings: Settings) -> dramatiq.Broker:
    """A RabbitMQ broker with publisher confirms, priority queues and acks that wait for
    the job's commit (:mod:`app.acks`), or the stub broker."""
    broker: dramatiq.Broker
    if settings.broker_url.startswith("stub://"):
        broker = StubBroker(middleware=build_middleware())
    else:
        # Queue arguments cannot change once a queue exists, so x-max-priority is fixed
        # now for every queue jobstack declares (per-job priorities 0–9).
        broker = JobstackRabbitmqBroker(
            url=amqp_url(settings),
            confirm_delivery=True,
            max_priority=MAX_PRIORITY,
            middleware=build_middleware(),
        )
    for queue in STANDARD_QUEUES:
        broker.declare_queue(queue)
    return broker


broker = create_broker(load_settings())
dramatiq.set_broker(broker)
