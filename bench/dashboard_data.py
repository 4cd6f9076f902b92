"""The data of ``make bench-dashboard``: its own PostgreSQL database, filled server-side
with a week of retained job history (one ``INSERT … SELECT … FROM generate_series``).

The rows are written in ``created_at`` order, as a live system writes them, so the
table's physical order follows time (what the planner's correlation statistics see).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from bench.services import POSTGRES_ADMIN

DATABASE = "jobstack_bench_dashboard"
#: How far back the history goes.
DAYS = 7
#: Jobs younger than this may still be unfinished (queued, running, scheduled, retrying).
UNFINISHED_HOURS = 2
#: Of the jobs younger than UNFINISHED_HOURS, the share in each unfinished state.
UNFINISHED = (("queued", 0.25), ("running", 0.02), ("scheduled", 0.15), ("retrying", 0.05))
#: Of the finished jobs, the share in each final state.
FINISHED = (("succeeded", 0.96), ("failed", 0.03), ("cancelled", 0.01))

#: (actor, queue, weight): the shipped actors; the periodic ones are added as cron ticks.
ACTORS = (
    ("webhooks.deliver", "critical", 0.26),
    ("diagnostics.echo", "default", 0.20),
    ("ingest.parse_run", "default", 0.14),
    ("datasets.parse_dataset", "default", 0.12),
    ("diagnostics.noop", "default", 0.10),
    ("diagnostics.sleep", "low", 0.09),
    ("diagnostics.fail", "default", 0.06),
    ("datasets.reprocess_dataset", "low", 0.03),
)
#: Periodic actors (tenant ``default``, queue ``low``) and their tick, in minutes.
CRON_ACTORS = (("maintenance.health_check", 10), ("maintenance.prune_jobs", 24 * 60))

#: Tenants, most active first (Zipf-like weights 1/rank); ``default`` is the CLI's and
#: cron's. The bench's tenant token is the second's.
TENANTS = (
    "acme", "globex", "initech", "umbrella", "hooli", "default", "stark", "wayne", "wonka",
    "tyrell", "cyberdyne", "soylent", "aperture", "massive", "vandelay", "monarch", "oscorp",
    "pied-piper", "gringotts", "duff",
)  # fmt: skip
TENANT_OF_TOKEN = TENANTS[1]

#: (exception type, innermost frame, message): what failures are grouped by.
ERRORS = (
    ("ConnectionError", "app/workloads/webhooks.py", 57, "post", "POST to the callback failed"),
    ("TimeoutError", "app/workloads/webhooks.py", 61, "post", "callback timed out after 10s"),
    ("ValueError", "app/workloads/datasets.py", 143, "parse_row", "bad count on line"),
    ("UnicodeDecodeError", "app/workloads/datasets.py", 98, "read_file", "invalid start byte"),
    ("KeyError", "app/workloads/ingest.py", 211, "merge_stanza", "'disabled'"),
    ("OperationalError", "app/db.py", 176, "session_scope", "server closed the connection"),
    ("RuntimeError", "actors/diagnostics.py", 72, "fail", "failing on purpose"),
    ("MemoryError", "app/workloads/ingest.py", 167, "unpack", "archive too large"),
)

#: The outer frames every traceback shares (Dramatiq's worker down to the actor), about
#: 1.2 KB: with the varying last frame and the exception line, a traceback is ~1.5 KB.
TRACEBACK_HEAD = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.12/site-packages/dramatiq/worker.py", line 513, in process_message
    res = actor(*message.args, **message.kwargs)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/opt/venv/lib/python3.12/site-packages/dramatiq/actor.py", line 187, in __call__
    return self.fn(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/jobstack/app/middleware/tracking.py", line 244, in wrapped
    return call(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
  File "/srv/jobstack/app/middleware/timeouts.py", line 88, in run_with_deadline
    return function(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/jobstack/app/observability/tracing.py", line 131, in traced
    result = function(*args, **kwargs)
             ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/jobstack/app/workloads/runner.py", line 52, in run
    return handler(payload, context=context)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/jobstack/app/workloads/runner.py", line 97, in handler
    for step in plan.steps(payload):
  File "/srv/jobstack/app/workloads/plan.py", line 40, in steps
    yield self._step(item, context)
          ^^^^^^^^^^^^^^^^^^^^^^^^^
"""


def admin_url() -> str:
    return POSTGRES_ADMIN


def sqlalchemy_url() -> str:
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{DATABASE}"


def libpq_url() -> str:
    return f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{DATABASE}"


def create_database() -> str:
    """An empty ``jobstack_bench_dashboard`` (dropped first), as a SQLAlchemy URL."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    return sqlalchemy_url()


def drop_database() -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _pick(random_column: str, choices: list[tuple[str, float]]) -> str:
    """A CASE choosing among ``choices`` by weight with the uniform ``random_column``."""
    total = sum(weight for _, weight in choices)
    parts, running = [], 0.0
    for value, weight in choices[:-1]:
        running += weight / total
        parts.append(f"WHEN {random_column} < {running:.6f} THEN {_literal(value)}")
    return f"(CASE {' '.join(parts)} ELSE {_literal(choices[-1][0])} END)"


def _text_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(_literal(value) for value in values) + "]::text[]"


def _jobs_sql() -> str:
    unfinished_share = sum(share for _, share in UNFINISHED)
    unfinished_choices = [(state, share) for state, share in UNFINISHED]
    unfinished_choices.append(("", 1 - unfinished_share))
    tenant_choices = [(name, 1 / rank) for rank, name in enumerate(TENANTS, start=1)]
    actor_choices = [(f"{index}", weight) for index, (_, _, weight) in enumerate(ACTORS, 1)]
    frames = [
        f'  File "/srv/jobstack/{path}", line {line}, in {function}\n    raise {kind}(message)\n'
        for kind, path, line, function, _ in ERRORS
    ]
    return f"""
INSERT INTO jobs (
    id, actor, queue, args, kwargs, state, priority, attempts, max_retries, progress,
    result, error_type, error_message, error_traceback, idempotency_key,
    request_fingerprint, correlation_id, tenant, created_at, run_at, published_at,
    started_at, finished_at, updated_at, worker_id, cancel_requested_at, last_event_seq)
SELECT
    id, actor, queue, '[]'::json, kwargs, state, 0,
    CASE WHEN state IN ('queued', 'scheduled') THEN 0
         WHEN state = 'failed' THEN CASE WHEN r_attempts < 0.3 THEN 1 ELSE 4 END
         WHEN state = 'retrying' THEN 1 + (r_attempts * 3)::int
         WHEN state = 'cancelled' THEN (r_attempts < 0.5)::int
         ELSE 1 + (r_attempts < 0.03)::int END,
    3,
    CASE WHEN state = 'succeeded' THEN 100 WHEN state = 'running' THEN (r_attempts * 99)::int
         ELSE 0 END,
    CASE WHEN state = 'succeeded' AND r_attempts < 0.5
         THEN json_build_object('ok', true, 'items', (r_attempts * 1000)::int) END,
    CASE WHEN failing THEN error_type END,
    CASE WHEN failing THEN message END,
    CASE WHEN failing THEN {_literal(TRACEBACK_HEAD)} || frame || error_type || ': ' || message
    END,
    idempotency_key,
    CASE WHEN idempotency_key IS NOT NULL THEN md5(id) || md5(idempotency_key) END,
    correlation_id, tenant, created_at,
    CASE WHEN state = 'scheduled' THEN now() + r_attempts * interval '1 day'
         WHEN state = 'retrying' THEN now() + r_attempts * interval '5 minutes' END,
    CASE WHEN state IN ('scheduled', 'retrying') THEN NULL
         ELSE created_at + interval '4 milliseconds' END,
    started_at, finished_at,
    coalesce(finished_at, started_at, created_at),
    CASE WHEN started_at IS NOT NULL
         THEN 'worker-' || (1 + mod(g, 4)) || ':' || (4000 + mod(g, 8)) END,
    CASE WHEN state = 'cancelled' AND started_at IS NOT NULL THEN finished_at END,
    1
FROM (
    SELECT *,
        state IN ('failed', 'retrying') AS failing,
        CASE WHEN state IN ('running', 'succeeded', 'failed', 'retrying')
                  OR (state = 'cancelled' AND r_attempts < 0.5)
             THEN least(created_at + wait, now()) END AS started_at,
        CASE WHEN state IN ('succeeded', 'failed', 'cancelled')
             THEN least(created_at + wait + run, now()) END AS finished_at
    FROM (
        SELECT g, r_attempts, created_at, kwargs,
            gen_random_uuid()::text AS id,
            ({_text_array([actor for actor, _, _ in ACTORS])})[actor_index] AS actor,
            ({_text_array([queue for _, queue, _ in ACTORS])})[actor_index] AS queue,
            {_pick("r_tenant", tenant_choices)} AS tenant,
            CASE WHEN unfinished <> '' THEN unfinished
                 ELSE {_pick("r_final", list(FINISHED))} END AS state,
            ({_text_array([kind for kind, *_ in ERRORS])})[error_index] AS error_type,
            ({_text_array(frames)})[error_index] AS frame,
            ({_text_array([message for *_, message in ERRORS])})[error_index]
                || ' (item ' || mod(g, 9973) || ', ' || substr(md5(g::text), 1, 8) || ')'
                AS message,
            CASE WHEN r_keys < 0.30
                 THEN 'req-' || substr(md5('c' || g), 1, 24) END AS correlation_id,
            CASE WHEN r_keys >= 0.25 AND r_keys < 0.35
                 THEN 'order-' || substr(md5('k' || g), 1, 20) END AS idempotency_key,
            -- Queue wait: mostly milliseconds, one job in a hundred behind a backlog (minutes).
            make_interval(secs => -ln(1 - r_wait) * CASE WHEN r_wait > 0.99 THEN 60 ELSE 0.08 END)
                AS wait,
            make_interval(secs => -ln(1 - r_run) * CASE WHEN actor_index IN (3, 4, 6) THEN 20
                                                        ELSE 0.4 END) AS run
        FROM (
            SELECT *,
                1 + floor(8 * power(r_error, 2))::int AS error_index,
                {_pick("r_actor", actor_choices)}::int AS actor_index,
                CASE WHEN created_at > now() - interval '{UNFINISHED_HOURS} hours'
                     THEN {_pick("r_unfinished", unfinished_choices)} ELSE '' END AS unfinished,
                json_build_object('item', g, 'source', substr(md5('s' || g), 1, 12)) AS kwargs
            FROM (
                SELECT g, random() AS r_tenant, random() AS r_final, random() AS r_wait,
                    random() AS r_run, random() AS r_keys, random() AS r_attempts,
                    random() AS r_error, random() AS r_actor, random() AS r_unfinished,
                    now() - interval '{DAYS} days'
                        + (g - 1 + random()) * interval '{DAYS} days' / %(count)s AS created_at
                FROM generate_series(1, %(count)s) AS g
            ) AS series
        ) AS drawn
    ) AS chosen
) AS timed
"""


def _cron_sql(actor: str, minutes: int) -> str:
    """One succeeded job per tick of a periodic actor over the history (tenant
    ``default``, idempotency key ``cron:<actor>:<minute>``, as :mod:`app.cron` makes)."""
    if minutes >= 24 * 60:
        first = f"date_trunc('day', now() - interval '{DAYS} days') + interval '3 hours 17 minutes'"
    else:
        first = f"date_trunc('hour', now() - interval '{DAYS} days')"
    key = (
        f"'cron:{actor}:' || to_char(tick AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS"+00:00"\')'
    )
    return f"""
INSERT INTO jobs (
    id, actor, queue, args, kwargs, state, priority, attempts, max_retries, progress,
    idempotency_key, tenant, created_at, published_at, started_at, finished_at, updated_at,
    worker_id, last_event_seq)
SELECT gen_random_uuid()::text, '{actor}', 'low', '[]'::json, '{{}}'::json, 'succeeded', 0, 1,
    0, 100, {key}, 'default', tick + interval '50 milliseconds', tick + interval '60 ms',
    tick + interval '80 ms', tick + interval '1.5 seconds', tick + interval '1.5 seconds',
    'worker-1:4000', 1
FROM generate_series({first}, now() - interval '2 seconds', interval '{minutes} minutes') AS tick
WHERE tick >= now() - interval '{DAYS} days'
"""


@dataclass
class Seeded:
    """What was written, and values that exist in it for the filters to look up."""

    jobs: int
    seconds: float
    vacuum_seconds: float
    states: dict[str, int]
    tenants: dict[str, int]
    oldest: datetime
    newest: datetime
    table_mb: float
    indexes_mb: float
    samples: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "seconds": round(self.seconds, 2),
            "vacuum_analyze_seconds": round(self.vacuum_seconds, 2),
            "states": self.states,
            "tenants": self.tenants,
            "created_at_from": self.oldest.isoformat(),
            "created_at_to": self.newest.isoformat(),
            "table_mb": round(self.table_mb, 1),
            "indexes_mb": round(self.indexes_mb, 1),
            "samples": self.samples,
        }


def seed(jobs: int) -> Seeded:
    """Fill ``jobs`` with ``jobs`` rows (cron ticks included), then VACUUM ANALYZE it."""
    cron_ticks = sum(DAYS * 24 * 60 // minutes for _, minutes in CRON_ACTORS)
    started = time.perf_counter()
    with psycopg.connect(libpq_url()) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        connection.execute(_jobs_sql(), {"count": max(jobs - cron_ticks, 1)})
        for actor, minutes in CRON_ACTORS:
            connection.execute(_cron_sql(actor, minutes))
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(libpq_url(), autocommit=True) as connection:
        # What autovacuum does to a table this size soon enough: statistics, and the
        # visibility map that lets index-only scans skip the heap.
        connection.execute("VACUUM (ANALYZE) jobs")
    vacuum_seconds = time.perf_counter() - started
    with psycopg.connect(libpq_url()) as connection:
        states, tenants = (
            {name: int(count) for name, count in connection.execute(
                f"SELECT {column}, count(*) FROM jobs GROUP BY 1 ORDER BY 2 DESC"
            )}
            for column in ("state", "tenant")
        )  # fmt: skip
        row = connection.execute(
            "SELECT min(created_at), max(created_at), pg_table_size('jobs'),"
            " pg_indexes_size('jobs') FROM jobs"
        ).fetchone()
        assert row is not None
        oldest, newest, table_bytes, index_bytes = row
        samples = _samples(connection)
    return Seeded(
        jobs=sum(states.values()),
        seconds=seconds,
        vacuum_seconds=vacuum_seconds,
        states=states,
        tenants=tenants,
        oldest=oldest,
        newest=newest,
        table_mb=table_bytes / 2**20,
        indexes_mb=index_bytes / 2**20,
        samples=samples,
    )


def run_sql(script: str) -> float:
    """Run ``script`` (statements separated by semicolons) in the bench database, then
    ANALYZE jobs; the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(libpq_url(), autocommit=True) as connection:
        for statement in script.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute("ANALYZE jobs")
    return time.perf_counter() - started


def _samples(connection: psycopg.Connection[Any]) -> dict[str, str]:
    """Existing values, from jobs about three days old (no cache has seen them)."""
    found: dict[str, str] = {}
    for name, column, extra in (
        ("job_id", "id", ""),
        ("correlation_id", "correlation_id", ""),
        ("idempotency_key", "idempotency_key", "AND idempotency_key NOT LIKE 'cron:%'"),
    ):
        row = connection.execute(
            f"SELECT {column} FROM jobs WHERE {column} IS NOT NULL {extra}"
            " AND created_at < now() - interval '3 days' ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        assert row is not None, f"no job has a {column}"
        found[name] = row[0]
    return found
