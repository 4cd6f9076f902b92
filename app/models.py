"""SQLAlchemy models: every table of the job database.

The core's (jobs, job_events, api_tokens, workers, leases, webhook_secrets, audit_log,
dashboard_sessions, signing_keys) and the shipped workloads' (health_checks,
ingestion_runs, conf_stanzas, datasets, name_records). A change here comes with its
migration in ``app/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.errors import NaiveDatetime
from app.states import JobState
from app.timeutil import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite keeps no zone, so values are stored as naive UTC and made aware again on load.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise NaiveDatetime()
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: SQL condition of the states in which a job holds its unique key.
ACTIVE_STATES_SQL = (
    "unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying')"
)

#: Tenant of jobs submitted without one (from Python code, the CLI, plain sends, cron).
DEFAULT_TENANT = "default"

#: Job fields about the platform rather than the tenant's work, shown to admins only: the
#: traceback (server paths, library versions) and the worker's ``hostname:pid``.
ADMIN_ONLY_JOB_FIELDS = ("error_traceback", "worker_id")
#: Job fields of jobstack's own bookkeeping, never sent to a tenant.
INTERNAL_JOB_FIELDS = ("request_fingerprint", "unique_key", "last_event_seq", "trace_context")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One unit of work; its id is the Dramatiq message id."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    actor: Mapped[str] = mapped_column(String(255))
    queue: Mapped[str] = mapped_column(String(255))
    args: Mapped[list[Any]] = mapped_column(JSON)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    error_type: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # SHA-256 of the request that created the job under its idempotency key, so a reuse
    # of the key with another request can be told apart from a replay.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    callback_url: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    # Set when cancellation of the running job was requested; workers poll it as the
    # fallback for a missed broadcast.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Hash of actor and arguments for actors declared with unique_for; at most one active
    # job per key and tenant (a partial unique index).
    unique_key: Mapped[str | None] = mapped_column(String(64))
    # The seq of the newest job_events row; bumped by every event so seqs never collide.
    last_event_seq: Mapped[int] = mapped_column(Integer, default=0)
    #: The W3C trace context of the job's creation (``traceparent``, ``tracestate``,
    #: ``baggage``) when tracing is on: every message of the job continues that trace.
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key"),
        Index("ix_jobs_state_created_at", "state", "created_at"),
        Index("ix_jobs_tenant_created_at", "tenant", "created_at", "id"),
        Index("ix_jobs_actor", "actor"),
        Index("ix_jobs_correlation_id", "correlation_id"),
        # Listings across tenants (admins) and the dashboard's charts of finished jobs.
        Index("ix_jobs_created_at", "created_at", "id"),
        Index(
            "ix_jobs_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
            sqlite_where=text("finished_at IS NOT NULL"),
        ),
        Index(
            "uq_jobs_active_unique_key",
            "tenant",
            "unique_key",
            unique=True,
            postgresql_where=text(ACTIVE_STATES_SQL),
            sqlite_where=text(ACTIVE_STATES_SQL),
        ),
        # The relay's scan: only rows still waiting to be published are indexed.
        Index(
            "ix_jobs_unpublished",
            "state",
            "run_at",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )

    @property
    def job_state(self) -> JobState:
        return JobState(self.state)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data."""
        data: dict[str, Any] = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            data[column.key] = value.isoformat() if isinstance(value, datetime) else value
        return data

    def to_tenant_dict(self) -> dict[str, Any]:
        """The job as its tenant may see it (webhooks): without platform details."""
        data = self.to_dict()
        for name in (*ADMIN_ONLY_JOB_FIELDS, *INTERNAL_JOB_FIELDS):
            data.pop(name, None)
        return data


class JobEvent(Base):
    """One entry of a job's history: a state change, a progress report, a note."""

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    attempt: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "attempt": self.attempt,
            "data": self.data,
        }


class ApiToken(Base):
    """A bearer token of the REST API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split(","))


class Worker(Base):
    """A worker process, as its heartbeats last described it."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    running_job_ids: Mapped[list[str]] = mapped_column(JSON)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Worker threads of the process, and its resident memory at the last heartbeat.
    threads: Mapped[int | None] = mapped_column(Integer)
    rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: app.workers.process_key: lets a worker on the same machine tell that this one died.
    process_key: Mapped[str | None] = mapped_column(String(160))


class IngestionRun(Base):
    """One uploaded configuration archive and the parsing of it."""

    __tablename__ = "ingestion_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    kind: Mapped[str] = mapped_column(String(32))
    label: Mapped[str | None] = mapped_column(String(255))
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(36))
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_parsed: Mapped[int] = mapped_column(Integer, default=0)
    stanza_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_ingestion_runs_tenant_created_at", "tenant", "created_at"),)


class ConfStanza(Base):
    """A stanza of a .conf file of an ingestion run, with its settings."""

    __tablename__ = "conf_stanzas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ingestion_runs.id", ondelete="CASCADE")
    )
    app: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    conf: Mapped[str] = mapped_column(String(255))
    stanza: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, str]] = mapped_column(JSON)
    line: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_conf_stanzas_run_id_conf", "run_id", "conf", "id"),)


class Dataset(Base):
    """An uploaded baby-name dataset file and its loading."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    country: Mapped[str] = mapped_column(String(8))
    year: Mapped[int | None] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(36))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)
    rows_per_second: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NameRecord(Base):
    """One line of a dataset: how many babies of a sex got a name in a year and country."""

    __tablename__ = "name_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("datasets.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(100))
    sex: Mapped[str] = mapped_column(String(1))
    count: Mapped[int] = mapped_column(Integer)
    year: Mapped[int] = mapped_column(Integer)
    country: Mapped[str] = mapped_column(String(8))

    __table_args__ = (
        Index("ix_name_records_name_year", "name", "year", "sex", "country"),
        Index("ix_name_records_dataset_id", "dataset_id"),
    )


class HealthCheck(Base):
    """One run of the periodic health check: the API, the database and the broker."""

    __tablename__ = "health_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    api_ok: Mapped[bool] = mapped_column(Boolean)
    api_detail: Mapped[str | None] = mapped_column(Text)
    database_ok: Mapped[bool] = mapped_column(Boolean)
    database_detail: Mapped[str | None] = mapped_column(Text)
    broker_ok: Mapped[bool] = mapped_column(Boolean)
    broker_detail: Mapped[str | None] = mapped_column(Text)


class WebhookSecret(Base):
    """The secret a tenant's webhooks are signed with (HMAC-SHA256 of the body)."""

    __tablename__ = "webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Lease(Base):
    """A named lease that lets one process at a time run a singleton (the outbox relay)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EventStream(Base):
    """An open event stream: counted against its token's and tenant's limits.

    The API process serving it refreshes ``seen_at``; a row not refreshed lately belongs
    to a process that died and no longer counts.
    """

    __tablename__ = "event_streams"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(36))
    tenant: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(36))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_event_streams_token_id", "token_id"),
        Index("ix_event_streams_tenant", "tenant"),
    )


class AuditEntry(Base):
    """One operator action: who (token and tenant), what, on what, and how many jobs."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    token_id: Mapped[str] = mapped_column(String(36))
    tenant: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(Text)
    job_count: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (Index("ix_audit_log_tenant_id", "tenant", "id"),)


class DashboardSession(Base):
    """A signed-in dashboard session. Its cookie holds a random id; only the id's SHA-256
    is stored, so reading this table (a backup, a replica) does not let one forge a
    session. Signing out ends it here, not only in the browser."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_dashboard_sessions_expires_at", "expires_at"),)


class SigningKey(Base):
    """A secret made once and shared by every API process (the dashboard's session key)."""

    __tablename__ = "signing_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
