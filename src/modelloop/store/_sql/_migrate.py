"""Schema creation and upgrade with the Alembic scripts shipped inside the package.

Opening a store asks the database for its revision (one query). Only when it is not the head does
the store take a lock that serialises every process opening the same database, look again, and
run Alembic on the locked connection, so processes racing on a brand-new database create it once.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from sqlalchemy import exc, text
from sqlalchemy.engine import Connection, Engine

from modelloop.exceptions import StoreError
from modelloop.store._sql._engine import run_transaction
from modelloop.store._sql._schema import HEAD_REVISION, VERSION_TABLE

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Fixed key of the PostgreSQL advisory lock held while migrating (any constant 64-bit number).
_PG_LOCK_KEY = zlib.crc32(b"modelloop.store.migrate")


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database; None when it has no modelloop schema yet.

    Runs in a savepoint: on PostgreSQL a failed query (no such table) would otherwise abort the
    caller's transaction.
    """
    try:
        with conn.begin_nested():
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    except (exc.OperationalError, exc.ProgrammingError):  # the table does not exist yet
        return None


def is_at_head(engine: Engine) -> bool:
    """One query: whether the database already has the newest schema."""
    return run_transaction(engine, current_revision, write=False) == HEAD_REVISION


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic ``Config`` for the packaged scripts, built in code (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> str:
    """Bring the schema to the head revision under a cross-process lock; return the revision."""
    if is_at_head(engine):
        return HEAD_REVISION
    if engine.dialect.name == "postgresql":
        return _upgrade_postgresql(engine)
    return run_transaction(engine, _upgrade_locked, write=True)


def _upgrade_postgresql(engine: Engine) -> str:
    try:
        with engine.connect() as conn:
            # Session-level lock, held across the migration transaction and released after it.
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                with conn.begin():
                    return _upgrade_locked(conn)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
    except exc.SQLAlchemyError as e:
        raise StoreError(
            f"could not create or upgrade the metadata schema: {getattr(e, 'orig', None) or e}"
        ) from e


def _upgrade_locked(conn: Connection) -> str:
    """Run in a transaction that holds the migration lock (SQLite: BEGIN IMMEDIATE)."""
    if current_revision(conn) == HEAD_REVISION:  # another process finished while we waited
        return HEAD_REVISION
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(conn), "head")
    except CommandError as e:
        found = current_revision(conn)
        raise StoreError(
            f"the metadata schema is at revision {found!r}, which this version of modelloop "
            f"does not know (its newest is {HEAD_REVISION!r}); upgrade modelloop"
        ) from e
    revision = current_revision(conn)
    if revision != HEAD_REVISION:
        raise StoreError(f"migration ended at revision {revision!r}, not {HEAD_REVISION!r}")
    return revision
