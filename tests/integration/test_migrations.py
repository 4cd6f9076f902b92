"""The migrations build exactly the schema the models describe, on the test's database."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app import db
from app.models import Base


def _differences() -> list[Any]:
    with db.get_engine().connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, Base.metadata))


def test_the_migrated_database_matches_the_models(database_url: str) -> None:
    # A model changed without its migration (or the other way round) shows up here as
    # the operations Alembic would autogenerate to close the gap.
    assert _differences() == []
