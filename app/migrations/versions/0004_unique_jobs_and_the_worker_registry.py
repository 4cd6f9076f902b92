"""unique jobs and the worker registry

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("running_job_ids", sa.JSON(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unique_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "uq_jobs_active_unique_key",
            ["tenant", "unique_key"],
            unique=True,
            postgresql_where=sa.text(
                "unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying')"
            ),
            sqlite_where=sa.text(
                "unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying')"
            ),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_jobs_active_unique_key",
            postgresql_where=sa.text(
                "unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying')"
            ),
            sqlite_where=sa.text(
                "unique_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying')"
            ),
        )
        batch_op.drop_column("unique_key")

    op.drop_table("workers")
