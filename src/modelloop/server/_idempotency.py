"""Retries that cannot write twice: the server's record of idempotency keys.

A client sends every write with an ``Idempotency-Key`` header and reuses the key when it retries
after a dropped connection. A write runs in one transaction with the record of its key and its
audit rows: the write runs, then its key is stored with its response (a row inserted, ``ON
CONFLICT DO NOTHING``), and all of it commits together or not at all. When the key is stored
already, a first attempt committed: this transaction is rolled back and the stored response is
the answer, so a retry writes nothing. A retry that arrives while the first attempt is still
running waits for it at the key's row (PostgreSQL's lock on the uncommitted key; SQLite's write
lock) and then finds its response. A retry that fails where its first attempt succeeded (a name
taken, a run ended) also answers with the stored response. A write that fails stores no key, so
a retry runs it again.

The table is the server's own bookkeeping, created with SQLAlchemy when the server starts (it is
not part of the store's schema and its migrations), and pruned of keys older than a day.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.exceptions import Conflict, InvalidInput, ModelloopError
from modelloop.store._http._codec import KEY_HEADER
from modelloop.store._sql import SqlStore

__all__ = ["IdempotencyKeys", "StoredResponse"]

_KEY = re.compile(r"[A-Za-z0-9_\-]{8,128}")
_KEEP_MS = 24 * 3600 * 1000

_metadata = sa.MetaData()
_keys = sa.Table(
    "modelloop_server_idempotency",
    _metadata,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),  # "pending" | "done"
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False, index=True),
)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_STORED = sa.select(_keys.c.state, _keys.c.status, _keys.c.body).where(
    _keys.c.key == sa.bindparam("which")
)


class _Repeated(Exception):
    """Rolls back a write whose idempotency key turned out to be stored already."""


class IdempotencyKeys:
    """Claims and stored responses of idempotency keys, in the store's own database."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._claims = 0
        self._lock = threading.Lock()
        self._record_stmt: Any = None

    def create_table(self) -> None:
        """Create the table if missing (the server calls this once at startup)."""
        _metadata.create_all(self._store._engine, checkfirst=True)

    def run(
        self,
        scope: str,
        key: str | None,
        work: Callable[[], StoredResponse],
        finish: Callable[[Connection], None] | None = None,
    ) -> StoredResponse:
        """``work()`` once per (scope, key); a repeated key returns the first response.

        ``work`` (whose store calls join this transaction), the record of the key and
        ``finish(conn)`` (e.g. writing audit events) are one transaction. On contention the
        transaction is run again from the start, ``work`` included, so ``work`` must only
        touch the database."""
        full: str | None = None
        if key is not None:
            if not _KEY.fullmatch(key):
                raise InvalidInput(
                    f"the {KEY_HEADER} header must be 8-128 letters, digits, '_' or '-'"
                )
            full = f"{scope}\n{key}"

        def tx(conn: Connection) -> StoredResponse:
            response = work()
            if full is not None and not self._record(conn, full, response):
                raise _Repeated  # the key's first request committed: undo this one
            if finish is not None:
                finish(conn)
            return response

        try:
            response = self._store._write_joined(tx)
        except _Repeated:
            return self._stored(str(full))
        except ModelloopError:
            # A retry whose first attempt committed may fail where that one succeeded (a name
            # it took, a run it ended): its stored answer is the answer.
            first = None if full is None else self._stored(full, missing_ok=True)
            if first is None:
                raise
            return first
        if full is not None:
            self._prune_now_and_then()
        return response

    def _record(self, conn: Connection, full: str, response: StoredResponse) -> bool:
        """Store the key with its response in this transaction; False when the key is already
        stored (by a transaction that committed first, which this one waited for)."""
        stmt = self._record_stmt
        if stmt is None:
            ins = self._store._insert(_keys)
            stmt = self._record_stmt = ins.on_conflict_do_nothing(
                index_elements=[_keys.c.key]
            ).returning(_keys.c.key)
        row = {
            "key": full,
            "state": "done",
            "status": response.status,
            "body": response.body,
            "created_at": _now_ms(),
        }
        return conn.execute(stmt, row).first() is not None

    @overload
    def _stored(self, full: str) -> StoredResponse: ...
    @overload
    def _stored(self, full: str, *, missing_ok: bool) -> StoredResponse | None: ...
    def _stored(self, full: str, *, missing_ok: bool = False) -> StoredResponse | None:
        """The stored response of a key (``None`` when there is none and ``missing_ok``)."""

        def read(conn: Connection) -> StoredResponse | None:
            row = conn.execute(_STORED, {"which": full}).first()
            if row is None:
                return None
            if row.state != "done":  # a claim left pending by an older server
                raise Conflict(
                    "a request with this idempotency key is still being processed; retry later"
                )
            return StoredResponse(int(row.status), bytes(row.body or b""))

        stored = self._store._read(read)
        if stored is None and not missing_ok:
            raise Conflict("the first request with this idempotency key left no answer; retry")
        return stored

    def _prune_now_and_then(self) -> None:
        with self._lock:
            self._claims += 1
            if self._claims % 1000 != 1:
                return
        cutoff = _now_ms() - _KEEP_MS
        self._store._write(lambda c: c.execute(sa.delete(_keys).where(_keys.c.created_at < cutoff)))
