"""Loop controller: each model's loop state (compare-and-set revision), the lease of the
controller acting for it, and the loop's events with their evidence.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (see 0001).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "loop_states",
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("data", Json, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("model_name", name="pk_loop_states"),
    )
    op.create_table(
        "loop_leases",
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("acquired_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("model_name", name="pk_loop_leases"),
    )
    op.create_table(
        "loop_events",
        sa.Column("event_id", BigId, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("evidence", Json, nullable=True),
        sa.PrimaryKeyConstraint("event_id", name="pk_loop_events"),
    )
    op.create_index("ix_loop_events_model", "loop_events", ["model_name", "event_id"])


def downgrade() -> None:
    for table in ("loop_events", "loop_leases", "loop_states"):
        op.drop_table(table)
