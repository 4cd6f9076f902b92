"""Shared fixtures: a fresh, migrated job database per test session (SQLite or PostgreSQL).

``JOBSTACK_TEST_DB`` chooses the backend (``sqlite``, the default, or ``postgres``);
tox runs the whole suite once on each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.dashboard.throughput import closed_buckets
from app import db
from app.config import load_settings
from app.migrations import migrate
from app.models import Base
from app.rabbitmq.queue_arguments import QUORUM
from app.tokens import verified_tokens
from tests.support.services import fresh_postgres_database, postgres_admin_url
from tests.support.splunk import CORPUS_VARIABLE

TEST_DATABASE = "jobstack_test"

# Fast relay passes so that tests of the outbox see it act within a second. Set before
# any worker boots (the relay reads its settings then).
os.environ.setdefault("JOBSTACK_RELAY_INTERVAL", "0.2")
os.environ.setdefault("JOBSTACK_RELAY_GRACE", "1")
os.environ.setdefault("JOBSTACK_RELAY_LEASE", "3")
os.environ.setdefault("JOBSTACK_DB_RETRY_SECONDS", "5")
os.environ.setdefault("JOBSTACK_HEARTBEAT_INTERVAL", "0.2")
# In-process workers must not reformat pytest's own log handlers.
os.environ.setdefault("JOBSTACK_LOG_FORMAT", "text")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backend = os.environ.get("JOBSTACK_TEST_DB", "sqlite")
    if backend == "postgres":
        url = fresh_postgres_database(TEST_DATABASE)
    elif backend == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "jobstack.db"
        url = f"sqlite:///{path}"
    else:
        raise pytest.UsageError(f"JOBSTACK_TEST_DB must be sqlite or postgres, not {backend!r}")
    # Subprocesses (the real CLIs) inherit the URL through the environment.
    os.environ["JOBSTACK_DATABASE_URL"] = url
    migrate.upgrade(url)
    db.configure(url)
    yield url
    db.get_engine().dispose()


#: The database of the ``postgres`` fixture.
POSTGRES_ONLY_DATABASE = "jobstack_test_postgres_only"


@pytest.fixture
def postgres(database_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database as the process's database for one test, whatever the
    suite's backend, for what SQLite does not have (server connections, row locks); yields
    its name. Fails in CI without PostgreSQL."""
    url = fresh_postgres_database(POSTGRES_ONLY_DATABASE)
    migrate.upgrade(url)
    db.configure(url)
    try:
        yield POSTGRES_ONLY_DATABASE
    finally:
        db.configure(database_url)
        with psycopg.connect(postgres_admin_url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {POSTGRES_ONLY_DATABASE} WITH (FORCE)")


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """The test database, emptied before the test."""
    with db.session_scope() as session:
        # Every table of the models, children before their parents.
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())
    verified_tokens.clear()
    closed_buckets.clear()  # The dashboard's closed chart buckets describe the old rows.
    yield database_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of one queue type run only on it (``tox -e quorum`` runs on quorum queues)."""
    queue_type = load_settings().queue_type
    for item in items:
        if item.get_closest_marker("quorum") and queue_type != QUORUM:
            item.add_marker(pytest.mark.skip(reason="quorum queues only: tox -e quorum"))
        if item.get_closest_marker("classic") and queue_type == QUORUM:
            item.add_marker(
                pytest.mark.skip(reason="classic queues only (quorum: see docs/scaling.md)")
            )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on the Splunk corpus test, which runs only when its folder is named."""
    outcomes = {
        outcome: sum(
            1
            for report in terminalreporter.stats.get(outcome, [])
            if getattr(report, "when", "call") in ("call", "setup")
            and "test_splunk_corpus.py" in getattr(report, "nodeid", "")
        )
        for outcome in ("passed", "failed", "skipped", "error")
    }
    if any(outcomes.values()):
        counts = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items() if n)
        folder = os.environ.get(CORPUS_VARIABLE) or "not set"
        terminalreporter.write_line(f"Splunk corpus test ({CORPUS_VARIABLE}={folder}): {counts}")
