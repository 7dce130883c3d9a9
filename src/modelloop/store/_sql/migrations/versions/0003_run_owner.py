"""Run owners: the host, pid and process key of the process that started a run, and its
heartbeat, so that runs whose process died can be told apart and ended.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite adds the columns in place (nullable, no default) and PostgreSQL alters.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner_host", sa.String(256), nullable=True))
        batch.add_column(sa.Column("owner_pid", sa.Integer, nullable=True))
        batch.add_column(sa.Column("owner_process_key", sa.String(160), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.BigInteger, nullable=True))
    # Runs already stored keep NULL owners: they are judged by their start time.
    op.create_index("ix_runs_status", "runs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_runs_status", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in ("heartbeat_at", "owner_process_key", "owner_pid", "owner_host"):
            batch.drop_column(column)
