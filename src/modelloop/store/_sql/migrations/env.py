"""Alembic environment of the modelloop metadata store.

modelloop runs migrations in code (``modelloop.store._sql._migrate``) and hands over an open
connection in ``config.attributes["connection"]``, already inside the transaction that holds the
migration lock. For developing a new revision, set ``sqlalchemy.url`` on the Config instead.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from modelloop.store._sql._schema import VERSION_TABLE, metadata

config = context.config


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
        **kwargs,
    )


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():  # joins the caller's transaction
            context.run_migrations()
    else:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
        engine = create_engine(url)
        with engine.begin() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
