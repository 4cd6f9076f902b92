"""``jobstack db``: the job database's schema."""

from __future__ import annotations

import click

from app.migrations import migrate


@click.group("db")
def db_group() -> None:
    """Manage the job database."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def upgrade_command(revision: str) -> None:
    """Apply the database migrations (JOBSTACK_DATABASE_URL)."""
    migrate.upgrade(revision=revision)
    click.echo(f"database at revision {revision}")
