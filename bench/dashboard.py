"""``make bench-dashboard``: the dashboard's queries on a large table.

    python -m bench.dashboard [--jobs 1000000] [--requests 50] [--keep] [--try-sql FILE]

Fills a database of its own (``jobstack_bench_dashboard``) with a week of job history,
signs in to the dashboard (Flask's test client) as an admin and as a tenant, and times
the live part of each page (``/fragments/<page>``: what the live stream re-renders every
2 s) against the target: p95 ≤ 300 ms. Each URL's first request (before any cache of the
app holds its data) is timed apart. For each URL that misses the target, and for the
overviews anyway, every SQL statement of one request is run again under
``EXPLAIN (ANALYZE, BUFFERS)`` and the slow ones are printed with their plans; with the
generic plan too when the app's connection runs one (psycopg prepares a statement after
5 executions, and PostgreSQL may then plan it once for every value). ``--try-sql`` runs
SQL (an index to try) before measuring.

The table goes to stdout and the numbers to bench/results/dashboard-<time>.json. The
database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench import dashboard_data
from bench.services import ROOT, write_results

#: The issue's target for every URL, in milliseconds (p95).
TARGET_MS = 300.0
#: Statements at least this slow (under EXPLAIN ANALYZE) are printed with their plans.
SLOW_STATEMENT_MS = 50.0
WARM_UP = 3


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="rows in jobs")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per URL")
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument(
        "--try-sql",
        metavar="FILE",
        help="SQL run after seeding, before measuring (a fix to try, e.g. an index)",
    )
    return parser.parse_args()


@dataclass
class Statement:
    sql: str
    parameters: Any
    ms: float
    #: The psycopg connection it ran on (to read that session's prepared statements).
    connection: Any = None


@dataclass
class SqlWatch:
    """Times every statement the app runs (SQLAlchemy cursor events); keeps them while
    ``capturing``."""

    capturing: bool = False
    count: int = 0
    ms: float = 0.0
    captured: list[Statement] = field(default_factory=list)
    _started: float = 0.0

    def before(self, conn: Any, cursor: Any, sql: str, parameters: Any, *_: Any) -> None:
        self._started = time.perf_counter()

    def after(self, conn: Any, cursor: Any, sql: str, parameters: Any, *_: Any) -> None:
        elapsed = (time.perf_counter() - self._started) * 1000
        self.count += 1
        self.ms += elapsed
        if self.capturing:
            dbapi = conn.connection.dbapi_connection
            self.captured.append(Statement(sql, parameters, elapsed, dbapi))

    def reset(self) -> None:
        self.count, self.ms = 0, 0.0


@dataclass
class Row:
    who: str
    url: str
    samples_ms: list[float]
    sql_ms: list[float]
    statements: int
    first_ms: float
    first_sql_ms: float
    first_statements: list[Statement] = field(default_factory=list, repr=False)

    def quantile(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.quantile(self.samples_ms, 0.5)

    @property
    def p95(self) -> float:
        return self.quantile(self.samples_ms, 0.95)

    @property
    def max(self) -> float:
        return max(self.samples_ms)

    @property
    def sql_p50(self) -> float:
        return self.quantile(self.sql_ms, 0.5)

    @property
    def ok(self) -> bool:
        return self.p95 <= TARGET_MS

    def as_dict(self) -> dict[str, Any]:
        return {
            "who": self.who,
            "url": self.url,
            "p50_ms": round(self.p50, 1),
            "p95_ms": round(self.p95, 1),
            "max_ms": round(self.max, 1),
            "sql_p50_ms": round(self.sql_p50, 1),
            "statements": self.statements,
            "first_ms": round(self.first_ms, 1),
            "first_sql_ms": round(self.first_sql_ms, 1),
            "ok": self.ok,
        }


def _tokens() -> dict[str, str]:
    """The admin's and the tenant's tokens; the other tenants get one each too, so the
    admin's search names every tenant, as it would in use."""
    from app.tokens import create_token

    tokens = {
        "admin": create_token("ops", {"admin"}, "bench-dashboard admin"),
        "tenant": create_token(
            dashboard_data.TENANT_OF_TOKEN, {"jobs:read", "jobs:write"}, "bench-dashboard"
        ),
    }
    for tenant in dashboard_data.TENANTS:
        if tenant not in ("default", dashboard_data.TENANT_OF_TOKEN):
            create_token(tenant, {"jobs:read"}, "bench-dashboard")
    return tokens


def _get(client: Any, url: str) -> str:
    response = client.get(url)
    if response.status_code != 200:
        body = response.get_data(as_text=True)
        raise SystemExit(f"GET {url}: {response.status_code}\n{body[:2000]}")
    text: str = response.get_data(as_text=True)
    return text


def _next_page(client: Any, url: str) -> str:
    """The fragment URL of the page after ``url`` (its ``rel="next"`` link)."""
    found = re.search(r'href="([^"]+)" rel="next"', _get(client, url))
    if found is None:
        raise SystemExit(f"GET {url}: no rel=next link to follow")
    return "/fragments/jobs?" + urlsplit(html.unescape(found.group(1))).query


def _urls(client: Any, samples: dict[str, str], tenant: bool) -> list[str]:
    if tenant:
        return [
            "/fragments/overview",
            "/fragments/jobs",
            "/fragments/jobs?state=failed",
            "/fragments/failures",
        ]
    now = datetime.now(UTC)
    window = {
        "created_after": (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
        "created_before": (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
    }
    actor = "datasets.reprocess_dataset"
    return [
        "/fragments/overview",
        "/fragments/jobs",
        "/fragments/jobs?state=failed",
        f"/fragments/jobs?{urlencode({'actor': actor, 'state': 'succeeded'})}",
        "/fragments/jobs?queue=low",
        f"/fragments/jobs?{urlencode({'search': samples['job_id']})}",
        f"/fragments/jobs?{urlencode({'search': samples['correlation_id']})}",
        f"/fragments/jobs?{urlencode({'search': samples['idempotency_key']})}",
        f"/fragments/jobs?{urlencode(window)}",
        _next_page(client, "/fragments/jobs?state=failed"),
        "/fragments/failures",
        "/fragments/queues",
        "/fragments/schedules",
    ]


def _measure(client: Any, who: str, url: str, requests: int, watch: SqlWatch) -> Row:
    # The first request is timed on its own: what a process's first reader waits for
    # before any cache of the app (not of PostgreSQL) holds this page's data.
    watch.reset()
    started = time.perf_counter()
    with _capturing(watch) as first_statements:
        _get(client, url)
    first_ms, first_sql_ms = (time.perf_counter() - started) * 1000, watch.ms
    for _ in range(WARM_UP - 1):
        _get(client, url)
    samples, sql_ms, statements = [], [], 0
    for _ in range(requests):
        watch.reset()
        started = time.perf_counter()
        _get(client, url)
        samples.append((time.perf_counter() - started) * 1000)
        sql_ms.append(watch.ms)
        statements = watch.count
    return Row(who, url, samples, sql_ms, statements, first_ms, first_sql_ms, first_statements)


@contextmanager
def _capturing(watch: SqlWatch) -> Iterator[list[Statement]]:
    watch.captured = []
    watch.capturing = True
    try:
        yield watch.captured
    finally:
        watch.capturing = False


#: SQLAlchemy's psycopg placeholders, and its escaped percent sign.
PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def _numbered(sql_text: str) -> tuple[str, list[str]]:
    """``sql_text`` with ``$1, $2, …`` for its named placeholders, as psycopg sends it
    (one number per distinct name), and the names in that order."""
    order: list[str] = []

    def swap(found: re.Match[str]) -> str:
        name = found.group(1)
        if name is None:
            return "%"
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return PLACEHOLDER.sub(swap, sql_text), order


def _plan_modes(statements: list[Statement]) -> dict[str, tuple[int, int]]:
    """Statement text ($n form): (generic, custom) plans so far on the app's connections.

    psycopg prepares a statement run ``prepare_threshold`` (5) times on a connection;
    PostgreSQL plans its first 5 executions with the values, then may switch to one
    generic plan for every value: what the app runs can differ from a plain EXPLAIN."""
    modes: dict[str, tuple[int, int]] = {}
    for connection in {id(s.connection): s.connection for s in statements}.values():
        if connection is None:
            continue
        rows = connection.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        ).fetchall()
        connection.rollback()
        for text, generic, custom in rows:
            modes[" ".join(text.split())] = (int(generic), int(custom))
    return modes


def _execution_ms(plan: list[str]) -> float:
    return next((float(line.split()[2]) for line in plan if line.startswith("Execution Time")), 0.0)


def _explain(statements: list[Statement]) -> list[dict[str, Any]]:
    """Each SELECT under EXPLAIN (ANALYZE, BUFFERS), with the parameters it ran with; and,
    when the app's connection runs it with a generic plan, that plan too."""
    import psycopg
    from psycopg import sql

    modes = _plan_modes(statements)
    explained = []
    with psycopg.connect(dashboard_data.libpq_url(), autocommit=True) as connection:
        for statement in statements:
            if not statement.sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = [
                line
                for (line,) in connection.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement.sql, statement.parameters
                )
            ]
            numbered, order = _numbered(statement.sql)
            generic, custom = modes.get(" ".join(numbered.split()), (0, 0))
            entry: dict[str, Any] = {
                "sql": statement.sql,
                "parameters": _printable(statement.parameters),
                "app_ms": round(statement.ms, 1),
                "explain_ms": _execution_ms(plan),
                "plan": plan,
                "app_plans": {"generic": generic, "custom": custom},
            }
            if generic and isinstance(statement.parameters, dict):
                values = sql.SQL(", ").join(sql.Literal(statement.parameters[n]) for n in order)
                connection.execute(f"PREPARE bench_generic AS {numbered}")
                connection.execute("SET plan_cache_mode = force_generic_plan")
                try:
                    query = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_generic ({})")
                    entry["generic_plan"] = [
                        line for (line,) in connection.execute(query.format(values))
                    ]
                    entry["generic_ms"] = _execution_ms(entry["generic_plan"])
                finally:
                    connection.execute("RESET plan_cache_mode")
                    connection.execute("DEALLOCATE bench_generic")
            explained.append(entry)
    return explained


def _printable(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {key: _printable(value) for key, value in parameters.items()}
    if isinstance(parameters, list | tuple):
        return [_printable(value) for value in parameters]
    if isinstance(parameters, datetime):
        return parameters.isoformat()
    return parameters


def _print_table(rows: list[Row]) -> None:
    print(
        f"\n  {'who':<7} {'URL':<70} {'p50':>7} {'p95':>7} {'max':>7} {'SQL p50':>8}"
        f" {'stmts':>5} {'first':>7}"
    )
    for row in rows:
        url = row.url if len(row.url) <= 70 else row.url[:67] + "..."
        print(
            f"  {row.who:<7} {url:<70} {row.p50:>7.1f} {row.p95:>7.1f} {row.max:>7.1f}"
            f" {row.sql_p50:>8.1f} {row.statements:>5} {row.first_ms:>7.1f}"
            f"  {'ok' if row.ok else 'MISSED'}"
        )
    print(
        f"  (milliseconds; target p95 <= {TARGET_MS:.0f} ms; SQL: time in the database driver;"
        " first: the URL's first request, before the warm-up, not counted in p50/p95/max)"
    )


def _code_version() -> dict[str, Any]:
    """The commit measured, and the files of api/ and app/ changed since (others may be
    editing them while the benchmark runs)."""

    def git(*command: str) -> str:
        done = subprocess.run(
            ["git", *command], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout

    changed = git("status", "--porcelain", "--", "api", "app").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "changed": changed}


def _shortened(text: str, keep: int = 700) -> str:
    """``text``, its middle left out when long (the JSON keeps it whole)."""
    if len(text) <= 2 * keep:
        return text
    return f"{text[:keep]} …[{len(text) - 2 * keep} characters]… {text[-keep:]}"


def _slowest_ms(entry: dict[str, Any]) -> float:
    return float(max(entry["explain_ms"], entry.get("generic_ms", 0.0)))


def _print_plans(plans: dict[str, list[dict[str, Any]]]) -> None:
    print(
        "\nplans: 'values' is EXPLAIN ANALYZE with the request's parameters; 'generic' the"
        " generic plan, shown when the app's connection uses one (app: generic/custom plans"
        " so far of that prepared statement); 'app' the time the app's driver took"
    )
    for key, explained in plans.items():
        slow = [entry for entry in explained if _slowest_ms(entry) >= SLOW_STATEMENT_MS]
        print(
            f"\n=== {key}: {len(explained)} SELECTs; {len(slow)} at or above"
            f" {SLOW_STATEMENT_MS:.0f} ms"
        )
        for entry in explained:
            generic = f"{entry['generic_ms']:>8.1f}" if "generic_ms" in entry else f"{'-':>8}"
            modes = entry["app_plans"]
            print(
                f"  values {entry['explain_ms']:>7.1f}  generic {generic}"
                f"  app {entry['app_ms']:>7.1f} ({modes['generic']}/{modes['custom']})"
                f"  {' '.join(entry['sql'].split())[:110]}"
            )
        for entry in slow:
            print(
                f"\n--- values {entry['explain_ms']:.1f} ms, generic"
                f" {entry.get('generic_ms', '-')} ms, in the app {entry['app_ms']:.1f} ms"
            )
            print(_shortened(entry["sql"]))
            print(_shortened(f"parameters: {entry['parameters']}"))
            print("  plan with the values:")
            for line in entry["plan"]:
                print(f"    {line}")
            if "generic_plan" in entry:
                print("  generic plan (what the app's connection runs):")
                for line in entry["generic_plan"]:
                    print(f"    {line}")


def main() -> None:
    args = _arguments()
    url = dashboard_data.create_database()
    try:
        _run(args, url)
    finally:
        if args.keep:
            print(f"\nkept: {dashboard_data.libpq_url()}")
        else:
            from app import db

            if db.current_engine() is not None:
                db.get_engine().dispose()
            dashboard_data.drop_database()


def _run(args: argparse.Namespace, url: str) -> None:
    # The app reads its settings from the environment: this database, the local broker.
    os.environ["JOBSTACK_DATABASE_URL"] = url
    from sqlalchemy import event

    from app import db
    from app.migrations.migrate import upgrade

    upgrade(url)
    print(f"seeding {args.jobs} jobs into {dashboard_data.DATABASE} ...", flush=True)
    seeded = dashboard_data.seed(args.jobs)
    print(
        f"seeded {seeded.jobs} jobs in {seeded.seconds:.1f} s (INSERT … SELECT), VACUUM ANALYZE"
        f" {seeded.vacuum_seconds:.1f} s; table {seeded.table_mb:.0f} MB,"
        f" indexes {seeded.indexes_mb:.0f} MB"
    )
    print(
        f"created_at spread evenly over the last {dashboard_data.DAYS} days"
        f" ({seeded.oldest:%Y-%m-%d %H:%M} to {seeded.newest:%Y-%m-%d %H:%M} UTC);"
        f" unfinished jobs only among those of the last {dashboard_data.UNFINISHED_HOURS} hours"
    )
    print("states: " + ", ".join(f"{state} {count}" for state, count in seeded.states.items()))
    top = list(seeded.tenants.items())[:5]
    print(
        f"{len(seeded.tenants)} tenants, largest: "
        + ", ".join(f"{tenant} {count}" for tenant, count in top)
    )

    if args.try_sql:
        print(
            f"trying {args.try_sql}: {dashboard_data.run_sql(Path(args.try_sql).read_text()):.1f} s"
        )

    db.configure(url)
    watch = SqlWatch()
    event.listen(db.get_engine(), "before_cursor_execute", watch.before)
    event.listen(db.get_engine(), "after_cursor_execute", watch.after)
    tokens = _tokens()

    code = _code_version()
    from api import create_app

    app = create_app()
    rows: list[Row] = []
    plans: dict[str, list[dict[str, Any]]] = {}
    for who in ("admin", "tenant"):
        client = app.test_client()
        response = client.post("/sign-in", data={"token": tokens[who]})
        if response.status_code != 303:
            raise SystemExit(f"sign-in as {who}: {response.status_code}")
        for page in _urls(client, seeded.samples, tenant=who == "tenant"):
            row = _measure(client, who, page, args.requests, watch)
            rows.append(row)
            print(
                f"  {who:<7} {page[:78]:<78} p95 {row.p95:>7.1f} ms"
                f"  {'ok' if row.ok else 'MISSED'}",
                flush=True,
            )
            if not row.ok or page == "/fragments/overview":
                with _capturing(watch) as statements:
                    _get(client, page)
                plans[f"{who} {page}"] = _explain(statements)
            if row.first_ms > TARGET_MS:
                plans[f"{who} {page} (its first request)"] = _explain(row.first_statements)

    print(f"\n{seeded.jobs} jobs, {os.cpu_count()} cores, {args.requests} requests per URL")
    changed = ", ".join(line[3:] for line in code["changed"])
    print(f"code: {code['commit']}" + (f", uncommitted changes to {changed}" if changed else ""))
    _print_table(rows)
    _print_plans(plans)
    _write(args, seeded, rows, plans, code)


def _write(
    args: argparse.Namespace,
    seeded: dashboard_data.Seeded,
    rows: list[Row],
    plans: dict[str, list[dict[str, Any]]],
    code: dict[str, Any],
) -> None:
    write_results(
        "dashboard",
        vars(args),
        {
            "code": code,
            "target_p95_ms": TARGET_MS,
            "seeded": seeded.as_dict(),
            "results": [row.as_dict() for row in rows],
            "plans": plans,
        },
    )


if __name__ == "__main__":
    main()
