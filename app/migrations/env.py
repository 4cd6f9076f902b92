"""Alembic environment: migrates the engine of ``app.db`` (JOBSTACK_DATABASE_URL)."""

from __future__ import annotations

from alembic import context

from app import db
from app.models import Base

config = context.config
url = config.attributes.get("database_url")
engine = db.build_engine(url) if url else db.get_engine()

try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    if url:
        engine.dispose()
