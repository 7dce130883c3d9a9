"""Monitoring: stored monitoring results, alert states and alert events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (see 0001).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True)


def upgrade() -> None:
    # No foreign keys to registered_models: any model name may have monitoring history.
    op.create_table(
        "monitoring_results",
        sa.Column("result_id", BigId, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=True),
        sa.Column("window_end", sa.BigInteger, nullable=True),
        sa.Column("num_rows", sa.BigInteger, nullable=False),
        sa.Column("share_drifted", sa.Double, nullable=True),
        sa.Column("dataset_drift", sa.Boolean, nullable=True),
        sa.Column("drifted_columns", Json, nullable=True),
        sa.Column("metrics", Json, nullable=True),
        sa.Column("payload", Json, nullable=True),
        sa.PrimaryKeyConstraint("result_id", name="pk_monitoring_results"),
    )
    op.create_index(
        "ix_monitoring_results_model_created",
        "monitoring_results",
        ["model_name", "created_at", "result_id"],
    )
    op.create_table(
        "alerts",
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("rule", sa.String(256), nullable=False),
        sa.Column("firing", sa.Boolean, nullable=False),
        sa.Column("since", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "rule", name="pk_alerts"),
    )
    op.create_table(
        "alert_events",
        sa.Column("event_id", BigId, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("rule", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_model", "alert_events", ["model_name", "event_id"])


def downgrade() -> None:
    for table in ("alert_events", "alerts", "monitoring_results"):
        op.drop_table(table)  # their indexes go with them
