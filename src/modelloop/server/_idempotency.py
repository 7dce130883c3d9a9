"""Retries that cannot write twice: the server's record of idempotency keys.

A client sends every write with an ``Idempotency-Key`` header and reuses the key when it retries
after a dropped connection. A write runs in one transaction with the record of its key and its
audit rows: the key is claimed first (a row inserted, ``ON CONFLICT DO NOTHING``), then the write
runs, then its response is stored on the row, and all of it commits together or not at all. A
retry with the same key finds the stored response and writes nothing; a retry that arrives while
the first is still running waits for its transaction (SQLite's write lock; PostgreSQL's lock on
the key's row) and then finds the response. A write that fails rolls its claim back with it, so
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

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.exceptions import Conflict, InvalidInput
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


class IdempotencyKeys:
    """Claims and stored responses of idempotency keys, in the store's own database."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._claims = 0
        self._lock = threading.Lock()

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
            if full is not None:
                stored = self._claim(conn, full)
                if stored is not None:
                    return stored
            response = work()
            if full is not None:
                conn.execute(
                    sa.update(_keys)
                    .where(_keys.c.key == full)
                    .values(state="done", status=response.status, body=response.body)
                )
            if finish is not None:
                finish(conn)
            return response

        response = self._store._write_joined(tx)
        if full is not None:
            self._prune_now_and_then()
        return response

    def _claim(self, conn: Connection, full: str) -> StoredResponse | None:
        """None when this transaction claimed the key, else the stored response of the request
        that did (which has committed: a concurrent claim waits for the other transaction)."""
        claim = (
            self._store._insert(_keys)
            .values(key=full, state="pending", created_at=_now_ms())
            .on_conflict_do_nothing(index_elements=[_keys.c.key])
            .returning(_keys.c.key)
        )
        if conn.execute(claim).first() is not None:
            return None
        row = conn.execute(
            sa.select(_keys.c.state, _keys.c.status, _keys.c.body).where(_keys.c.key == full)
        ).first()
        if row is not None and row.state == "done":
            return StoredResponse(int(row.status), bytes(row.body or b""))
        # a claim left pending by an older server, or one that vanished between the two reads
        raise Conflict("a request with this idempotency key is still being processed; retry later")

    def _prune_now_and_then(self) -> None:
        with self._lock:
            self._claims += 1
            if self._claims % 1000 != 1:
                return
        cutoff = _now_ms() - _KEEP_MS
        self._store._write(lambda c: c.execute(sa.delete(_keys).where(_keys.c.created_at < cutoff)))
