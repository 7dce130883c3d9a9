"""An index on the latest metric values by key, so a runs table sorted on a metric reads the
runs in metric order instead of sorting the whole experiment.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_latest_metrics_key_value", "latest_metrics", ["key", "value", "run_id"])


def downgrade() -> None:
    op.drop_index("ix_latest_metrics_key_value", table_name="latest_metrics")
