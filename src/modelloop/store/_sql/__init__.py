"""SQLAlchemy backend of the metadata store (SQLite and PostgreSQL) with Alembic migrations."""

from __future__ import annotations

from modelloop.store._sql._schema import HEAD_REVISION
from modelloop.store._sql._store import SqlStore

__all__ = ["HEAD_REVISION", "SqlStore"]
