"""Settings read from ``JOBSTACK_*`` environment variables.

Every default lives here with a docstring; docs/configuration.md lists the same
variables. Nothing reads the environment at import time except ``app.broker``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from app.errors import ConfigurationError

PREFIX = "JOBSTACK_"


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; build one with :func:`load_settings`."""

    database_url: str = "sqlite:///var/jobstack.db"
    """SQLAlchemy URL of the job database (``postgresql+psycopg://…`` in production)."""

    db_pool_size: int = 10
    """PostgreSQL connections a process keeps open once it has needed them (SQLite:
    unused). A worker process with Dramatiq's 8 threads held at most 9 under load (its
    threads', the group committer's own, its background threads')."""

    db_max_overflow: int = 10
    """PostgreSQL connections a process may open beyond ``db_pool_size`` at a peak, closed
    again when returned: no process holds more than ``db_pool_size + db_max_overflow`` (an
    API process with 16 threads held 17 under load; a worker at most its threads + 5)."""

    db_pool_timeout: float = 30.0
    """Seconds a thread waits for a PostgreSQL connection while its process holds
    ``db_pool_size + db_max_overflow`` already, before its work fails with a pool timeout."""

    db_prepared_statements: bool = True
    """Whether psycopg prepares a statement run 5 times on a connection. ``false`` behind
    PgBouncer in transaction mode before 1.21 (Debian 12's is 1.18): a prepared statement
    stays on a server connection that PgBouncer then gives other clients."""

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    """AMQP URL of RabbitMQ, or ``stub://`` for Dramatiq's in-memory stub broker."""

    storage_dir: str = "var/storage"
    """Where uploaded files are kept."""

    queues: str = ""
    """More queues jobs may be submitted to (comma-separated), besides ``critical``,
    ``default``, ``low`` and the actors' own; the API refuses every other name."""

    queue_type: str = "classic"
    """``classic`` (one node; per-job priorities 0-9) or ``quorum`` (replicated over a
    RabbitMQ cluster; see docs/scaling.md for what priorities do there). Every queue
    jobstack declares gets this type; an existing queue keeps the type it was made with."""

    quorum_delivery_limit: int = 20
    """Under quorum queues: deliveries of one message (each return by a dead worker or a
    closed consumer counts) after which RabbitMQ dead-letters it by itself; its job then
    fails when the dead letters are swept. Keep it above JOBSTACK_POISON_DEATHS."""

    broker_heartbeat: int = 60
    """AMQP heartbeat in seconds: a dead peer is noticed within about twice this."""

    broker_blocked_timeout: int = 300
    """Seconds a publisher waits while RabbitMQ blocks it (memory or disk alarm) before failing."""

    relay_enabled: bool = True
    """Whether worker processes run the outbox relay thread."""

    relay_interval: float = 1.0
    """Seconds between two relay passes (a pass that published a full batch is followed at
    once)."""

    relay_grace: float = 10.0
    """Seconds a queued job may stay unpublished before the relay publishes it."""

    relay_lease: float = 15.0
    """SQLite: seconds the relay lease lasts; another worker takes over after it expires.
    (On PostgreSQL every worker process relays, sharing the rows by row locks.)"""

    relay_batch: int = 500
    """Rows the relay publishes per pass at most."""

    db_retry_seconds: float = 30.0
    """How long a worker keeps retrying a database write before giving up on a message."""

    cancel_grace: float = 1.0
    """Seconds a cancelled running job has to stop at a checkpoint before it is interrupted."""

    cancel_poll_interval: float = 0.5
    """Seconds between a worker's checks of the database for cancelled running jobs (the
    fallback for a missed broadcast)."""

    cancel_broadcast: bool = True
    """Whether workers listen on the RabbitMQ fanout exchange for cancellations."""

    max_time_limit: float = 1500.0
    """Longest an attempt may run, in seconds, whatever its actor's time_limit: below
    RabbitMQ's consumer_timeout (30 minutes by default), which redelivers longer ones."""

    heartbeat_interval: float = 10.0
    """Seconds between two heartbeats of a worker process in the worker registry."""

    worker_gone_after: float = 60.0
    """A worker silent this many seconds is reported ``gone``."""

    poison_deaths: int = 3
    """Worker deaths while running one message after which it is dead-lettered as poison."""

    retention_days: float = 7.0
    """Finished jobs older than this many days are pruned by the daily maintenance job."""

    retention_batch: int = 1000
    """Jobs deleted per transaction when pruning."""

    api_url: str = "http://127.0.0.1:8000"
    """Where the periodic health check finds the API (it requests /readyz)."""

    webhook_allow: str = ""
    """Hosts or CIDRs (comma-separated) that webhooks may reach although private or reserved."""

    upload_max_bytes: int = 100 * 1024 * 1024
    """Largest uploaded file accepted (POST /v1/uploads); larger ones get 413."""

    archive_max_members: int = 10_000
    """Most members an uploaded archive may have."""

    archive_max_bytes: int = 512 * 1024 * 1024
    """Most bytes an uploaded archive may extract to."""

    archive_max_ratio: float = 100.0
    """Highest compression ratio accepted (beyond it: a decompression bomb)."""

    api_max_body_bytes: int = 1_048_576
    """Largest request body the REST API accepts; larger ones get 413."""

    sse_max_seconds: float = 600.0
    """Longest an event stream stays open; clients resume with Last-Event-ID."""

    streams_per_token: int = 20
    """Event streams one API token may hold open at once (across API processes); one more
    gets 429."""

    streams_per_tenant: int = 100
    """Event streams one tenant's tokens may hold open at once; one more gets 429."""

    api_threads: int = 16
    """Threads per API process that run the Flask views (event streams and slow clients
    hold none)."""

    api_header_timeout: float = 10.0
    """Seconds a client has to send a request's headers; then the connection is closed."""

    api_body_timeout: float = 60.0
    """Seconds a client has to send a request's body once its headers are in (408 after)."""

    tenant_max_active: int = 0
    """Unfinished jobs (scheduled, queued, running, retrying) one tenant may have; a
    submission over it gets 429. 0: no limit."""

    tenant_submits_per_minute: int = 0
    """Jobs one tenant may submit per minute; a submission over it gets 429. 0: no limit."""

    tenant_max_priority: int = 9
    """Highest priority a tenant's token may give a job (admins: any); above it, 422."""

    token_cache_seconds: float = 5.0
    """How long an API process trusts a token it has verified (0: check every request)."""

    metrics_enabled: bool = False
    """Whether workers serve Prometheus metrics on ``metrics_port`` and the API serves
    ``/metrics`` (off: nothing is counted and no port is opened)."""

    metrics_host: str = "127.0.0.1"
    """Address a worker host's metrics server binds to (``0.0.0.0`` to be scraped from
    elsewhere)."""

    metrics_port: int = 9191
    """Port of a worker host's metrics server (its worker processes are merged there)."""

    metrics_dir: str = "var/metrics"
    """Folder where a host's worker processes share their metrics (prometheus_client's
    multiprocess mode); cleared when the workers start."""

    metrics_token: str = ""
    """When set, ``/metrics`` (API and workers) answers only requests bearing
    ``Authorization: Bearer <token>``; empty: open, like Flower's."""

    metrics_cache_seconds: float = 5.0
    """How long the API reuses the numbers behind ``/metrics`` (one query for many
    scrapers)."""

    dashboard_session_hours: float = 8.0
    """How long a dashboard sign-in lasts; then the operator signs in again."""

    dashboard_refresh_seconds: float = 2.0
    """How often an open dashboard page is re-read and, when it changed, sent to the
    browser (a job's own page: twice as often; dead letters: a fifth as often)."""

    dashboard_bulk_max: int = 10_000
    """Most jobs one bulk action (retry or cancel what a filter matches) may move."""

    trace_url_template: str = ""
    """Link from a job's page to its trace, e.g. ``http://jaeger:16686/trace/{trace_id}``
    (``{trace_id}``, ``{job_id}``); empty: no link."""

    sentry_url_template: str = ""
    """Link from a job's page to its error reports, e.g.
    ``https://sentry.example/organizations/acme/issues/?query=job_id:{job_id}``; empty: no
    link."""

    rabbitmq_ui_url: str = ""
    """RabbitMQ's management UI, linked from the Queues page; empty: the broker's host on
    port 15672."""

    log_level: str = "INFO"
    """Log level of jobstack's processes."""

    log_format: str = "json"
    """``json`` (one object per line, with job_id and correlation_id) or ``text``."""


def _parse(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = environ.get(PREFIX + field.name.upper())
        if raw is not None and raw != "":
            values[field.name] = _parse(raw, field.type, field.name)
    return Settings(**values)
