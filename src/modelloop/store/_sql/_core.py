"""What every part of :class:`SqlStore` shares: the engine, transactions, schema readiness, input
checks and the assembly of :class:`Run` records."""

from __future__ import annotations

import contextlib
import math
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from modelloop.exceptions import InvalidInput, NotFound, StoreError
from modelloop.store._owner import is_stale
from modelloop.store._records import Run, RunOwner, RunStatus
from modelloop.store._sql import _migrate
from modelloop.store._sql import _schema as T
from modelloop.store._sql._engine import (
    is_memory_sqlite,
    make_engine,
    normalize_url,
    run_transaction,
)

__all__ = ["SqlCore", "check_int", "check_text", "now_ms", "row_is_stale", "run_owner"]

R = TypeVar("R")

#: The store and connection whose transaction every call of that store in this context joins,
#: set by :meth:`SqlCore._write_joined`.
_JOINED: ContextVar[tuple[Any, Connection] | None] = ContextVar(
    "modelloop_joined_transaction", default=None
)


#: Statements of the hottest paths, built once: a statement object built per call costs SQLAlchemy
#: its construction and cache key on every execution (four times a prepared one's cost).
RUN_ROW = sa.select(T.runs).where(T.runs.c.run_id == sa.bindparam("run_id"))
RUN_EXISTS = sa.select(T.runs.c.run_id).where(T.runs.c.run_id == sa.bindparam("run_id"))
_RUN_PARTS = tuple(
    sa.select(table.c.run_id, table.c.key, table.c.value).where(
        table.c.run_id.in_(sa.bindparam("ids", expanding=True))
    )
    for table in (T.params, T.tags, T.latest_metrics)
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_text(value: Any, what: str, max_len: int = T.NAME_LEN) -> str:
    """``value`` if it is a non-empty string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise InvalidInput(f"{what} {value[:40]!r}... is longer than {max_len} characters")
    return value


def check_int(value: Any, what: str) -> int:
    """``value`` as an int if it is an integer (NumPy integers included, bools not)."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidInput(f"{what} must be an integer, got {value!r}") from None


class SqlCore:
    """Engine, transactions and shared helpers. Thread-safe; fork-safe (a child process opens
    its own connections)."""

    def __init__(self, url: str) -> None:
        self._url = normalize_url(url)
        self._engine = make_engine(self._url)
        self._dialect = self._engine.dialect.name
        # INSERT with ON CONFLICT, which each dialect spells in its own module.
        self._insert: Any
        if self._dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert = sqlite_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert = pg_insert
        self._pid = os.getpid()
        self._ready = False
        self._closed = False
        self._lock = threading.Lock()
        # An in-memory SQLite database is one shared connection: transactions must take turns.
        self._serial = threading.RLock() if is_memory_sqlite(self._url) else None
        # the run's row, locked against concurrent status changes where the dialect can
        self._run_row_locked = (
            RUN_ROW.with_for_update(key_share=True) if self._dialect == "postgresql" else RUN_ROW
        )

    @property
    def url(self) -> str:
        """The store URL, password hidden."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def upgrade(self) -> str:
        self._check_usable()
        with self._serial or contextlib.nullcontext(), self._lock:
            revision = _migrate.upgrade(self._engine)
            self._ready = True
        return revision

    def close(self) -> None:
        self._closed = True
        self._engine.dispose()

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if os.getpid() != self._pid:
            # Forked: the parent's pooled connections belong to the parent; never touch them.
            self._engine.dispose(close=False)
            self._pid = os.getpid()

    def _prepare(self) -> None:
        self._check_usable()
        if not self._ready:
            with self._lock:
                if not self._ready:
                    _migrate.upgrade(self._engine)
                    self._ready = True

    def _read(self, fn: Callable[[Connection], R]) -> R:
        return self._transaction(fn, write=False)

    def _write(self, fn: Callable[[Connection], R]) -> R:
        return self._transaction(fn, write=True)

    def _write_joined(self, fn: Callable[[Connection], R]) -> R:
        """Run ``fn`` in one write transaction that every call of this store made inside it
        (in this thread or task) joins instead of opening its own: the control-plane server
        makes a request's change, its audit rows and the record of its idempotency key one
        commit. An error anywhere rolls the whole back; on contention the whole of ``fn`` is
        run again, so it must only touch the database (and state it resets itself)."""

        def joined(conn: Connection) -> R:
            token = _JOINED.set((self, conn))
            try:
                return fn(conn)
            finally:
                _JOINED.reset(token)

        return self._transaction(joined, write=True)

    def _transaction(self, fn: Callable[[Connection], R], *, write: bool) -> R:
        joined = _JOINED.get()
        if joined is not None and joined[0] is self:
            return fn(joined[1])
        if self._serial is None:
            self._prepare()
            return run_transaction(self._engine, fn, write=write)
        with self._serial:
            self._prepare()
            return run_transaction(self._engine, fn, write=write)

    # -- shared queries ----------------------------------------------------------------------

    def _run_row(self, conn: Connection, run_id: str, *, lock: bool = False) -> Row[Any]:
        """The run's row, or ``NotFound``. With ``lock``, concurrent status changes wait (the
        lock leaves the run's metric and param inserts free: they only need its key)."""
        if not isinstance(run_id, str):
            raise InvalidInput(f"run id must be a string, got {run_id!r}")
        row = conn.execute(self._run_row_locked if lock else RUN_ROW, {"run_id": run_id}).first()
        if row is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return row

    def _require_run(self, conn: Connection, run_id: str) -> None:
        if not isinstance(run_id, str):
            raise InvalidInput(f"run id must be a string, got {run_id!r}")
        found = conn.execute(RUN_EXISTS, {"run_id": run_id}).first()
        if found is None:
            raise NotFound(f"run {run_id!r} does not exist")

    def _load_runs(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[Run]:
        """Records for run rows: one query each for their params, latest metrics and tags."""
        if not rows:
            return []
        ids = [r.run_id for r in rows]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        of_params, of_tags, of_metrics = _RUN_PARTS
        for q, into in ((of_params, params), (of_tags, tags)):
            for run_id, key, value in conn.execute(q, {"ids": ids}):
                into[run_id][key] = value
        nan = math.nan
        for run_id, key, value in conn.execute(of_metrics, {"ids": ids}):
            metrics[run_id][key] = nan if value is None else value
        now = now_ms()
        return [
            Run(
                run_id=r.run_id,
                experiment_id=r.experiment_id,
                name=r.run_name,
                status=RunStatus(r.status),
                start_time=r.start_time,
                end_time=r.end_time,
                user=r.user_name,
                params=MappingProxyType(params[r.run_id]),
                metrics=MappingProxyType(metrics[r.run_id]),
                tags=MappingProxyType(tags[r.run_id]),
                owner=run_owner(r),
                heartbeat_at=r.heartbeat_at,
                stale=r.status == RunStatus.RUNNING.value and row_is_stale(r, now),
            )
            for r in rows
        ]


def run_owner(row: Row[Any]) -> RunOwner | None:
    """The owner recorded in a ``runs`` row, or None."""
    if row.owner_host is None or row.owner_pid is None:
        return None
    return RunOwner(row.owner_host, row.owner_pid, row.owner_process_key or "")


def row_is_stale(row: Any, now: int, stale_after_ms: int | None = None) -> bool:
    """Whether the RUNNING run of a ``runs`` row (or an object with its columns as attributes)
    has lost its owner (see store/_owner.py)."""
    extra = {} if stale_after_ms is None else {"stale_after_ms": stale_after_ms}
    return is_stale(
        owner_host=row.owner_host,
        owner_pid=row.owner_pid,
        process_key=row.owner_process_key,
        last_seen=row.start_time if row.heartbeat_at is None else row.heartbeat_at,
        now=now,
        **extra,
    )
