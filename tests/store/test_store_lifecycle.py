"""Opening, migrating and closing stores; backend set-up."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelloop.exceptions import InvalidInput, StoreError
from modelloop.store import RunStatus, Store, get_store
from modelloop.store._owner import current_owner
from modelloop.store._sql import HEAD_REVISION, SqlStore
from modelloop.store._sql import _schema as T
from modelloop.store._sql._migrate import alembic_config


def test_get_store_returns_a_sql_store_usable_until_closed(store_url: str) -> None:
    s = get_store(store_url)
    assert isinstance(s, Store) and isinstance(s, SqlStore)
    assert s.dialect in ("sqlite", "postgresql")
    s.create_experiment("e")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.list_experiments()


def test_upgrade_is_idempotent_and_returns_head(store: SqlStore) -> None:
    assert store.upgrade() == HEAD_REVISION
    assert store.upgrade() == HEAD_REVISION
    store.create_experiment("after-upgrade")
    assert store.upgrade() == HEAD_REVISION
    assert [e.name for e in store.list_experiments()] == ["after-upgrade"]


def test_head_constant_matches_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


@pytest.mark.sql_only  # the database's own schema (a server adds its idempotency table)
def test_migrations_create_exactly_the_declared_schema(store: SqlStore, store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store.upgrade()
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": T.VERSION_TABLE}
            )
            diff = compare_metadata(ctx, T.metadata)
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert tables == set(T.metadata.tables) | {T.VERSION_TABLE}
    assert "alembic_version" not in tables  # left free for Optuna sharing the database


def test_a_second_store_sees_the_same_data(store: SqlStore, store_url: str) -> None:
    exp = store.create_experiment("shared")
    run = store.create_run(exp.experiment_id, tags={"k": "v"})
    store.log_params(run.run_id, {"a": 1})
    other = SqlStore(store_url)
    try:
        assert other.get_experiment_by_name("shared") == exp
        assert other.get_run(run.run_id).params == {"a": "1"}
        other.set_tags(run.run_id, {"from": "other"})
    finally:
        other.close()
    assert store.get_run(run.run_id).tags == {"k": "v", "from": "other"}


def test_opening_does_not_touch_the_database_until_first_use(tmp_path: Path) -> None:
    db = tmp_path / "lazy" / "deeper" / "store.db"
    s = SqlStore(f"sqlite:///{db}")
    assert not db.exists()
    s.list_experiments()  # first use creates the folder, the file and the schema
    s.close()
    assert db.is_file()


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    s = SqlStore(f"sqlite:///{db}")
    s.upgrade()
    engine = s._engine
    with engine.connect() as conn:
        pragmas = {
            p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    s.close()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    finally:
        raw.close()


def test_in_memory_sqlite_works() -> None:
    s = SqlStore("sqlite://")
    exp = s.create_experiment("mem")
    assert s.get_experiment(exp.experiment_id).name == "mem"
    s.close()


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql://u@h/db", "sqlite+aiosqlite:///x.db", "postgresql+asyncpg://u@h/db"],
)
def test_unsupported_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput, match="store URL"):
        SqlStore(url)


def test_plain_postgresql_url_means_psycopg() -> None:
    s = SqlStore("postgresql://postgres@127.0.0.1:5432/test")
    assert s.url.startswith("postgresql+psycopg://")
    s.close()


def test_unreachable_database_is_a_store_error() -> None:
    s = SqlStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError):
        s.list_experiments()
    s.close()


def test_a_schema_newer_than_the_code_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    SqlStore(f"sqlite:///{db}").upgrade()
    raw = sqlite3.connect(db)
    raw.execute(f"UPDATE {T.VERSION_TABLE} SET version_num = '9999'")
    raw.commit()
    raw.close()
    s = SqlStore(f"sqlite:///{db}")
    with pytest.raises(StoreError, match="9999"):
        s.list_experiments()
    s.close()


def test_sqlite_writer_waits_for_a_held_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    s = SqlStore(f"sqlite:///{db}")
    s.upgrade()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO experiments (name, created_at) VALUES ('held', 0)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        s.create_experiment("waiting")  # blocks on the lock, then succeeds: no "locked" error
        waited = time.monotonic() - started
    finally:
        release.join()
        holder.close()
    assert [e.name for e in s.list_experiments()] == ["held", "waiting"]
    assert waited >= 0.3
    s.close()


def test_a_0002_database_is_upgraded_with_its_runs_kept(store_url: str) -> None:
    from alembic import command

    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002")
            conn.execute(sa.text("INSERT INTO experiments (name, created_at) VALUES ('old', 1)"))
            conn.execute(
                sa.text(
                    "INSERT INTO runs (run_id, experiment_id, run_name, status, start_time, "
                    "end_time, user_name) VALUES ('a' || :x, 1, 'r', 'RUNNING', 1000, NULL, 'u')"
                ),
                {"x": "0" * 31},
            )
            columns = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
        assert "heartbeat_at" not in columns  # really the 0002 schema
    finally:
        engine.dispose()
    s = SqlStore(store_url)
    try:
        assert s.upgrade() == HEAD_REVISION  # through 0003 (run owners) and every later one
        old = s.get_run("a" + "0" * 31)
        # Started long ago by a process that recorded no owner: judged by its start time.
        assert old.status is RunStatus.RUNNING and old.owner is None and old.stale
        (ended,) = s.end_stale_runs()
        assert ended.run_id == old.run_id and ended.end_time == 1000
        new = s.create_run(old.experiment_id, owner=current_owner())
        assert s.get_run(new.run_id).owner == current_owner()
    finally:
        s.close()
