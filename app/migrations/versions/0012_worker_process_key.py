"""Each worker's process key, so that a worker on the same machine can tell it died.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no rows, on PostgreSQL or SQLite.
    op.add_column("workers", sa.Column("process_key", sa.String(160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("process_key")
