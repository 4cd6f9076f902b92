"""jobstack through a real PgBouncer (Debian's, 1.18) in transaction mode: a worker process
and the API reach PostgreSQL only through it, with psycopg's prepared statements off
(JOBSTACK_DB_PREPARED_STATEMENTS=false), and the core scenarios work; with them on (the
default) the same PgBouncer breaks a query run often.

PostgreSQL only, whatever the suite's backend (as with the ``postgres`` fixture), in a
database of its own: every test using the ``postgres`` fixture drops and creates that one
again, and one running at the same time against the same server (another checkout, another
tox env) pulled it from under this module's worker and API.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import db
from app.config import load_settings
from app.migrations import migrate
from tests.acceptance.conftest import BIN, WorkerProcess, jobstack
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.served_api import ServedApi
from tests.support.services import fresh_postgres_database, postgres_admin_url
from tests.support.waiting import wait_until

#: Server connections PgBouncer shares among all clients: far fewer than the worker's and
#: the API's pooled connections, so their transactions take turns on the same ones.
SERVER_CONNECTIONS = 3
#: Jobs in the burst: each runs the worker's same few statements, far beyond psycopg's
#: default of preparing a statement at its fifth run on a connection.
BURST = 30


#: The database PgBouncer passes on (created, migrated and dropped by ``bouncer``).
DATABASE = "jobstack_test_pgbouncer"


@pytest.fixture
def bouncer(tmp_path: Path) -> Iterator[PgBouncer]:
    migrate.upgrade(fresh_postgres_database(DATABASE))
    try:
        with running_pgbouncer(
            tmp_path / "pgbouncer", DATABASE, pool_size=SERVER_CONNECTIONS
        ) as running:
            yield running
    finally:
        with psycopg.connect(postgres_admin_url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def test_jobs_succeed_retry_fail_and_cancel_through_pgbouncer_in_transaction_mode(
    bouncer: PgBouncer,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    through_bouncer = {
        "JOBSTACK_DATABASE_URL": bouncer.url(DATABASE),
        "JOBSTACK_DB_PREPARED_STATEMENTS": "false",
    }
    scopes = "jobs:read,jobs:write"
    created = jobstack(
        "tokens", "create", "--tenant", "acme", "--scopes", scopes, env=through_bouncer
    )
    assert created.returncode == 0, created.stderr
    auth = {"Authorization": f"Bearer {created.stdout.strip()}"}
    api = ServedApi(BIN, tmp_path / "api.log", through_bouncer)
    try:
        worker = start_worker(through_bouncer)
        before = bouncer.transactions(DATABASE)

        def submit(job: dict[str, Any]) -> str:
            status, _, body = api.call("POST", "/v1/jobs", job, auth)
            assert status == 202, body
            return str(body["id"])

        def job(job_id: str) -> dict[str, Any]:
            status, _, body = api.call("GET", f"/v1/jobs/{job_id}", headers=auth)
            assert status == 200, body
            return dict(body)

        def reaches(job_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
            return wait_until(
                lambda: (found := job(job_id))["state"] == state and found,
                timeout,
                f"job {job_id} to be {state}",
            )

        # Submitted jobs succeed, one of them after a retry.
        echoes = {
            submit({"actor": "diagnostics.echo", "kwargs": {"value": i}}): i for i in range(BURST)
        }
        retried = submit({"actor": "diagnostics.fail", "kwargs": {"times": 1}})
        # A job failing every attempt is retried, then fails for good.
        doomed = submit({"actor": "diagnostics.fail", "kwargs": {"times": 5}, "max_retries": 1})
        for job_id, value in echoes.items():
            assert reaches(job_id, "succeeded")["result"] == value
        assert reaches(retried, "succeeded")["attempts"] == 2
        failed = reaches(doomed, "failed")
        assert failed["attempts"] == 2
        assert failed["error_message"] == "diagnostics.fail: attempt 2 fails (5 planned)"

        # A running job is cancelled.
        sleeper = submit({"actor": "diagnostics.sleep", "kwargs": {"seconds": 60}})
        reaches(sleeper, "running")
        status, _, body = api.call("POST", f"/v1/jobs/{sleeper}/cancel", headers=auth)
        assert status == 202, body
        assert reaches(sleeper, "cancelled", timeout=20)["state"] == "cancelled"

        # All of it went through PgBouncer (its counters lag by up to stats_period, 60s by
        # default: polled). Not one statement failed there.
        wait_until(
            lambda: bouncer.transactions(DATABASE) > before + BURST, 70, "PgBouncer's counters"
        )
        assert "prepared statement" not in bouncer.log.read_text()
        for log in (api.log, worker.log):
            assert "prepared statement" not in log.read_text()
    finally:
        api.stop()


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "not-prepared"])
def test_prepared_statements_break_under_pgbouncer_in_transaction_mode_unless_switched_off(
    bouncer: PgBouncer, prepared: bool
) -> None:
    settings = replace(load_settings(), db_prepared_statements=prepared)
    engine = db.build_engine(bouncer.url(DATABASE), settings)
    query = text("SELECT count(*) FROM jobs WHERE state = :state")
    try:
        # Two clients, one after the other, each running the same query six times in
        # transactions of its own: PgBouncer gives both the same idle server connection
        # (it reuses the last one freed), where the first client's psycopg prepared
        # "_pg3_0" at its fifth run and the second's prepares "_pg3_0" again.
        with engine.connect() as first, engine.connect() as second:
            for client in (first, second):
                for _ in range(6):
                    client.execute(query, {"state": "queued"}).scalar_one()
                    client.commit()
    except DBAPIError as error:
        assert prepared, f"failed although prepared statements are off: {error}"
        # (Had PgBouncer given the second client another server connection, the error
        # would be that "_pg3_0" does not exist there: as much a proof.)
        assert re.search(
            r'prepared statement "_pg3_0" (already exists|does not exist)', str(error.orig)
        )
    else:
        assert not prepared, "PgBouncer in transaction mode did not break prepared statements"
    finally:
        engine.dispose()
