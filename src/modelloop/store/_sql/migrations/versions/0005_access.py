"""Users, API tokens, and an audit log that names the route and the model and cannot be altered.

Adds ``users`` and ``api_tokens``; adds ``route`` and ``model_name`` to ``audit_events`` (the
model filled in for the registry events already stored), indexes for reading the log by user,
model and time, and triggers on both backends that refuse any UPDATE or DELETE of an audit row
(and, on PostgreSQL, a TRUNCATE of the table).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen copies of the column types as they were at this revision (see 0001).
Json = sa.JSON(none_as_null=True)

_REFUSAL = "audit events are append-only: they cannot be changed or deleted"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("models", Json, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(256), nullable=False),
        sa.Column("secret_hash", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("last_used_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("token_id", name="pk_api_tokens"),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], name="fk_api_tokens_user_name"),
    )
    op.create_index("ix_api_tokens_user_name", "api_tokens", ["user_name"])
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("route", sa.String(256), nullable=True))
        batch.add_column(sa.Column("model_name", sa.String(256), nullable=True))
    _backfill_model_names()
    op.create_index("ix_audit_events_actor", "audit_events", ["actor", "event_id"])
    op.create_index("ix_audit_events_model_name", "audit_events", ["model_name", "event_id"])
    op.create_index("ix_audit_events_timestamp", "audit_events", ["timestamp"])
    _create_triggers()


def _backfill_model_names() -> None:
    # Entity ids of registry events: "m" (registered_model), "m/3" (model_version),
    # "m@champion" (alias). Model names hold neither "/" nor "@".
    bind = op.get_bind()
    ae = sa.table(
        "audit_events",
        sa.column("event_id", sa.BigInteger),
        sa.column("entity_type", sa.String),
        sa.column("entity_id", sa.String),
        sa.column("model_name", sa.String),
    )
    rows = bind.execute(
        sa.select(ae.c.event_id, ae.c.entity_type, ae.c.entity_id).where(
            ae.c.entity_type.in_(("registered_model", "model_version", "alias"))
        )
    ).all()
    for event_id, entity_type, entity_id in rows:
        sep = {"model_version": "/", "alias": "@"}.get(entity_type)
        name = entity_id.split(sep, 1)[0] if sep else entity_id
        bind.execute(sa.update(ae).where(ae.c.event_id == event_id).values(model_name=name[:256]))


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION modelloop_audit_append_only() RETURNS trigger AS $$ BEGIN "
            f"RAISE EXCEPTION '{_REFUSAL}' USING ERRCODE = 'insufficient_privilege'; "
            "END $$ LANGUAGE plpgsql"
        )
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{event.lower()} BEFORE {event} ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION modelloop_audit_append_only()"
            )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION modelloop_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{event.lower()} BEFORE {event} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}'); END"
            )


def _drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    events = ("update", "delete", "truncate") if postgresql else ("update", "delete")
    for event in events:
        on = " ON audit_events" if postgresql else ""
        op.execute(f"DROP TRIGGER IF EXISTS audit_events_no_{event}{on}")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS modelloop_audit_append_only()")


def downgrade() -> None:
    _drop_triggers()
    op.drop_index("ix_audit_events_timestamp", table_name="audit_events")
    op.drop_index("ix_audit_events_model_name", table_name="audit_events")
    op.drop_index("ix_audit_events_actor", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("model_name")
        batch.drop_column("route")
    op.drop_index("ix_api_tokens_user_name", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
