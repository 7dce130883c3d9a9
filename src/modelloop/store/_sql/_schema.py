"""Table definitions of the metadata store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

The migrations in ``migrations/versions`` create exactly these tables; a test compares the two.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "alert_events",
    "alerts",
    "aliases",
    "api_tokens",
    "audit_events",
    "datasets",
    "experiments",
    "latest_metrics",
    "loop_events",
    "loop_leases",
    "loop_states",
    "metadata",
    "metrics",
    "model_versions",
    "monitoring_results",
    "params",
    "registered_models",
    "run_artifacts",
    "run_datasets",
    "runs",
    "tags",
    "users",
]

#: The newest migration. Opening a store compares the database against it with one query, so
#: opening an up-to-date store never loads Alembic. A test keeps it equal to the script head.
HEAD_REVISION = "0006"

#: Alembic's bookkeeping table. Not the default name: Optuna studies share the PostgreSQL
#: database and keep their own ``alembic_version``.
VERSION_TABLE = "modelloop_alembic_version"

#: 64-bit integer ids; on SQLite only ``INTEGER PRIMARY KEY`` aliases the rowid (autoincrement).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: JSON on both backends (PostgreSQL ``json``, not ``jsonb``: it keeps the key order of a
#: schema or profile as written). SQL NULL for None, not the JSON literal null.
Json = sa.JSON(none_as_null=True)
Millis = sa.BigInteger

KEY_LEN = 250
NAME_LEN = 256
OWNER_KEY_LEN = 160

#: Deterministic constraint names, so later migrations can address them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("experiment_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(NAME_LEN), nullable=False, unique=True),
    sa.Column("created_at", Millis, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column(
        "experiment_id",
        sa.Integer,
        sa.ForeignKey("experiments.experiment_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("run_name", sa.String(NAME_LEN), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", Millis, nullable=False),
    sa.Column("end_time", Millis, nullable=True),
    sa.Column("user_name", sa.String(NAME_LEN), nullable=False),
    # The process that started the run and its last sign of life (see store/_owner.py);
    # NULL for runs started without an owner.
    sa.Column("owner_host", sa.String(NAME_LEN), nullable=True),
    sa.Column("owner_pid", sa.Integer, nullable=True),
    sa.Column("owner_process_key", sa.String(OWNER_KEY_LEN), nullable=True),
    sa.Column("heartbeat_at", Millis, nullable=True),
    sa.Index("ix_runs_experiment_start", "experiment_id", "start_time", "run_id"),
    # Finds the few RUNNING runs among many ended ones when stale runs are collected.
    sa.Index("ix_runs_status", "status"),
)


def _run_fk() -> sa.ForeignKey:
    return sa.ForeignKey("runs.run_id", ondelete="CASCADE")


params = sa.Table(
    "params",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(KEY_LEN), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(KEY_LEN), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# ``value`` is NULL exactly when the logged value was NaN: SQLite cannot store NaN (it turns it
# into NULL), so both backends use the same encoding and compare NaN the same way.
metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("metric_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), _run_fk(), nullable=False),
    sa.Column("key", sa.String(KEY_LEN), nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", Millis, nullable=False),
    sa.Index("ix_metrics_run_key_step", "run_id", "key", "step", "timestamp"),
)

latest_metrics = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("key", sa.String(KEY_LEN), primary_key=True),
    sa.Column("value", sa.Double, nullable=True),  # NULL means NaN, as in ``metrics``
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", Millis, nullable=False),
    # Revision 0006: a runs table sorted on a metric walks this index in value order.
    sa.Index("ix_latest_metrics_key_value", "key", "value", "run_id"),
)

run_artifacts = sa.Table(
    "run_artifacts",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),
    sa.Column("digest", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("dataset_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(NAME_LEN), nullable=False),
    sa.Column("digest", sa.String(128), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("num_rows", sa.BigInteger, nullable=False),
    sa.Column("schema", Json, nullable=True),
    sa.Column("profile", Json, nullable=True),
    sa.Column("created_at", Millis, nullable=False),
    sa.UniqueConstraint("name", "digest"),
    sa.Index("ix_datasets_digest", "digest"),
)

run_datasets = sa.Table(
    "run_datasets",
    metadata,
    sa.Column("run_id", sa.String(32), _run_fk(), primary_key=True),
    sa.Column(
        "dataset_id",
        sa.Integer,
        sa.ForeignKey("datasets.dataset_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("role", sa.String(64), primary_key=True),
    sa.Index("ix_run_datasets_dataset", "dataset_id"),
)

registered_models = sa.Table(
    "registered_models",
    metadata,
    sa.Column("name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", Millis, nullable=False),
    sa.Column("updated_at", Millis, nullable=False),
    sa.Column("latest_version", sa.Integer, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column(
        "name",
        sa.String(NAME_LEN),
        sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column(
        "run_id", sa.String(32), sa.ForeignKey("runs.run_id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", Millis, nullable=False),
    sa.Column("user_name", sa.String(NAME_LEN), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("tags", Json, nullable=True),
    sa.Index("ix_model_versions_run", "run_id"),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("alias", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(
        ["name", "version"],
        ["model_versions.name", "model_versions.version"],
        ondelete="CASCADE",
    ),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("timestamp", Millis, nullable=False),
    sa.Column("actor", sa.String(NAME_LEN), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("entity_type", sa.String(64), nullable=False),
    sa.Column("entity_id", sa.String(1024), nullable=False),
    sa.Column("before", Json, nullable=True),
    sa.Column("after", Json, nullable=True),
    # Revision 0005: the route of a change made through the server ("POST /api/v1/..."), and the
    # registered model an event concerns, so the log can be read per model.
    sa.Column("route", sa.String(NAME_LEN), nullable=True),
    sa.Column("model_name", sa.String(NAME_LEN), nullable=True),
    sa.Index("ix_audit_entity", "entity_type", "entity_id", "event_id"),
    sa.Index("ix_audit_events_actor", "actor", "event_id"),
    sa.Index("ix_audit_events_model_name", "model_name", "event_id"),
    sa.Index("ix_audit_events_timestamp", "timestamp"),
)

# -- monitoring (revision 0002) ---------------------------------------------------------------
# No foreign key to ``registered_models``: data monitored outside the registry has a history too.
# Float columns hold NULL for NaN, as in ``metrics``.

monitoring_results = sa.Table(
    "monitoring_results",
    metadata,
    sa.Column("result_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(NAME_LEN), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("created_at", Millis, nullable=False),
    sa.Column("window_start", Millis, nullable=True),
    sa.Column("window_end", Millis, nullable=True),
    sa.Column("num_rows", sa.BigInteger, nullable=False),
    sa.Column("share_drifted", sa.Double, nullable=True),
    sa.Column("dataset_drift", sa.Boolean, nullable=True),
    sa.Column("drifted_columns", Json, nullable=True),
    sa.Column("metrics", Json, nullable=True),
    sa.Column("payload", Json, nullable=True),
    sa.Index("ix_monitoring_results_model_created", "model_name", "created_at", "result_id"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("model_name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("rule", sa.String(NAME_LEN), primary_key=True),
    sa.Column("firing", sa.Boolean, nullable=False),
    sa.Column("since", Millis, nullable=False),
    sa.Column("updated_at", Millis, nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
)

alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(NAME_LEN), nullable=False),
    sa.Column("rule", sa.String(NAME_LEN), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", Millis, nullable=False),
    sa.Index("ix_alert_events_model", "model_name", "event_id"),
)

# -- loop controller (revision 0004) -----------------------------------------------------------
# Model names are free text, as for monitoring: a loop can outlive a registry entry.

loop_states = sa.Table(
    "loop_states",
    metadata,
    sa.Column("model_name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("data", Json, nullable=True),
    sa.Column("updated_at", Millis, nullable=False),
)

loop_leases = sa.Table(
    "loop_leases",
    metadata,
    sa.Column("model_name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("holder", sa.String(NAME_LEN), nullable=False),
    sa.Column("acquired_at", Millis, nullable=False),
    sa.Column("expires_at", Millis, nullable=False),
)

loop_events = sa.Table(
    "loop_events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(NAME_LEN), nullable=False),
    sa.Column("timestamp", Millis, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("evidence", Json, nullable=True),
    sa.Index("ix_loop_events_model", "model_name", "event_id"),
)

# -- users and tokens (revision 0005) ----------------------------------------------------------
# Users are disabled, never deleted: the audit log keeps naming people who existed. ``models``
# is a JSON list of the model names an editor or deployer is limited to (NULL: every model).
# A token row keeps only the scrypt hash of its secret (see modelloop.access._tokens).

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("models", Json, nullable=True),
    sa.Column("created_at", Millis, nullable=False),
    sa.Column("updated_at", Millis, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("user_name", sa.String(NAME_LEN), sa.ForeignKey("users.name"), nullable=False),
    sa.Column("secret_hash", sa.String(256), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", Millis, nullable=False),
    sa.Column("revoked_at", Millis, nullable=True),
    sa.Column("last_used_at", Millis, nullable=True),
    sa.Index("ix_api_tokens_user_name", "user_name"),
)
