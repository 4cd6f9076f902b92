"""Applying Alembic migrations from code and from ``jobstack db upgrade``."""

from __future__ import annotations

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic configuration for jobstack's migrations (packaged in ``app/migrations``)."""
    config = Config()
    config.set_main_option("script_location", "app:migrations")
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    """Bring the database up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)
