"""Finding the real servers the tests need, and failing (in CI) or skipping without them."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import psycopg
import pytest

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip the test when ``what`` is missing; in CI (CI=true) fail it instead."""
    if available:
        return
    message = f"{what} is not reachable"
    if in_ci():
        pytest.fail(f"{message}, and CI=true: this test must run", pytrace=False)
    pytest.skip(message)


def reachable(url: str, default_port: int) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def postgres_admin_url() -> str:
    return os.environ.get("JOBSTACK_TEST_POSTGRES_ADMIN_URL", DEFAULT_POSTGRES_ADMIN_URL)


def fresh_postgres_database(name: str) -> str:
    """An empty PostgreSQL database ``name`` (dropped first if it exists), as a SQLAlchemy
    URL; fails in CI without PostgreSQL."""
    admin_url = postgres_admin_url()
    require(reachable(admin_url, 5432), f"PostgreSQL at {admin_url}")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"
