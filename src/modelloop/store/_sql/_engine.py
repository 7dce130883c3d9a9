"""Engines for SQLite and PostgreSQL set up for many threads and processes, the transaction runner
that waits out contention instead of failing, and the mapping of driver errors to ours."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from modelloop.exceptions import Conflict, InvalidInput, ModelloopError, StoreError

__all__ = [
    "WRITE",
    "is_retryable",
    "make_engine",
    "normalize_url",
    "run_transaction",
    "to_json",
    "wrap_error",
]

T = TypeVar("T")

#: Execution option marking a connection whose transaction writes (SQLite: BEGIN IMMEDIATE).
WRITE = "modelloop_write"
SQLITE_BUSY_TIMEOUT_S = 30.0
#: How long contention ("database is locked", deadlocks) is retried before giving up.
RETRY_DEADLINE_S = 120.0

# SQLSTATEs PostgreSQL uses for transactions that may simply be run again.
_PG_RETRY_STATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def normalize_url(url: str | URL) -> URL:
    """Parse a store URL; ``postgresql://`` and ``postgres://`` mean psycopg 3."""
    try:
        u = make_url(url)
    except (exc.ArgumentError, ValueError, TypeError) as e:
        raise InvalidInput(f"store URL {str(url)!r} is not a valid SQLAlchemy URL") from e
    backend, _, driver = u.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise InvalidInput(
                f"store URL driver {u.drivername!r} is not supported; use postgresql+psycopg://"
            )
        return u.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise InvalidInput(
                f"store URL driver {u.drivername!r} is not supported; use sqlite:///path"
            )
        return u
    raise InvalidInput(
        f"store URL scheme {u.drivername!r} is not supported; "
        "use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db"
    )


def is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: URL) -> Engine:
    """An engine for the URL, with the per-connection settings the store relies on."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    try:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except ImportError as exc:  # the driver is imported here, on the first engine
        raise InvalidInput(
            f"store URL {url.render_as_string(hide_password=True)} needs the PostgreSQL "
            f"driver psycopg, which is not installed ({exc}): pip install 'modelloop[postgres]'"
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    memory = is_memory_sqlite(url)
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    }
    if memory:
        kwargs["poolclass"] = sa.StaticPool  # one shared connection, or each sees its own db
    else:
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below); sqlite3's implicit BEGIN would be DEFERRED.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if not memory:
                # Persistent in the file; several processes may switch a new file at once.
                _retry_sqlite_locked(lambda: cur.execute("PRAGMA journal_mode = WAL"))
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            # LIKE is case-sensitive on PostgreSQL; make SQLite agree (ILIKE uses lower()).
            cur.execute("PRAGMA case_sensitive_like = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that later writes cannot wait for the lock (SQLite returns
        # SQLITE_BUSY at once to avoid deadlock), so writers take the write lock up front.
        if conn.get_execution_options().get(WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _retry_sqlite_locked(fn: Callable[[], Any]) -> Any:
    import sqlite3

    deadline = time.monotonic() + RETRY_DEADLINE_S
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _sqlite_busy_message(str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.25)


def _sqlite_busy_message(message: str) -> bool:
    m = message.lower()
    return "database is locked" in m or "database is busy" in m or "table is locked" in m


def is_retryable(error: exc.DBAPIError) -> bool:
    """Whether running the whole transaction again may succeed (contention, not a mistake)."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY_STATES:
        return True
    return isinstance(error, exc.OperationalError) and _sqlite_busy_message(str(orig))


def wrap_error(error: exc.SQLAlchemyError) -> ModelloopError:
    """Our exception for a database error that is not worth retrying."""
    orig = getattr(error, "orig", None) or error
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if isinstance(error, exc.IntegrityError):
        return Conflict(f"the change contradicts stored data: {detail}")
    if isinstance(error, exc.DataError):
        return InvalidInput(f"the database rejected a value: {detail}")
    return StoreError(f"metadata store error: {detail}")


def run_transaction(engine: Engine, fn: Callable[[Connection], T], *, write: bool) -> T:
    """Run ``fn`` in one transaction, committed if it returns; retried whole on contention.

    ``fn`` must be safe to run again from the start (it only touches the database).
    """
    deadline: float | None = None
    delay = 0.01
    while True:
        try:
            with engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE: True})
                with conn.begin():
                    return fn(conn)
        except exc.DBAPIError as e:
            if not is_retryable(e):
                raise wrap_error(e) from e
            now = time.monotonic()
            deadline = deadline or now + RETRY_DEADLINE_S
            if now > deadline:
                raise StoreError(
                    f"the metadata store stayed busy for {RETRY_DEADLINE_S:.0f} s; "
                    "another process holds a long write transaction"
                ) from e
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)
        except exc.SQLAlchemyError as e:
            raise wrap_error(e) from e


def to_json(value: Any, what: str) -> Any:
    """A JSON-ready copy of ``value`` (mappings, sequences, numbers, strings, None).

    JSON has no NaN or infinity and PostgreSQL rejects them, so non-finite floats become None.
    NumPy scalars and arrays become Python numbers and lists. Anything else is ``InvalidInput``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_json(v, f"{what}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, f"{what}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalar or array, without importing numpy
        return to_json(value.tolist(), what)
    raise InvalidInput(f"{what} holds a {type(value).__name__}, which cannot be stored as JSON")
