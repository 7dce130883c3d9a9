"""Retries that cannot write twice: the server's record of idempotency keys.

A client sends every write with an ``Idempotency-Key`` header and reuses the key when it retries
after a dropped connection. The first request with a key claims it (a row inserted before the
write); the write runs; its response is stored on the row. A retry with the same key gets the
stored response and writes nothing; a retry that arrives while the first is still running waits
for it. A write that fails with an error releases its claim, so a retry runs it again.

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
from sqlalchemy.exc import IntegrityError

from modelloop.exceptions import Conflict, InvalidInput
from modelloop.store._http._codec import KEY_HEADER
from modelloop.store._sql import SqlStore

__all__ = ["IdempotencyKeys", "StoredResponse"]

_KEY = re.compile(r"[A-Za-z0-9_\-]{8,128}")
_KEEP_MS = 24 * 3600 * 1000
_WAIT_S = 60.0  # how long a retry waits for the first request with its key to finish

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
        ``finish(conn)`` runs after ``work`` in the transaction that records the response
        (without a key: in a transaction of its own), e.g. to write audit events."""
        if key is None:
            response = work()
            if finish is not None:
                self._store._write(finish)
            return response
        if not _KEY.fullmatch(key):
            raise InvalidInput(f"the {KEY_HEADER} header must be 8-128 letters, digits, '_' or '-'")
        full = f"{scope}\n{key}"
        stored = self._claim(full)
        if stored is not None:
            return stored
        try:
            response = work()
        except BaseException:
            self._store._write(lambda c: c.execute(sa.delete(_keys).where(_keys.c.key == full)))
            raise

        def done(conn: Connection) -> None:
            conn.execute(
                sa.update(_keys)
                .where(_keys.c.key == full)
                .values(state="done", status=response.status, body=response.body)
            )
            if finish is not None:
                finish(conn)

        self._store._write(done)
        return response

    def _claim(self, full: str) -> StoredResponse | None:
        """None when this request claimed the key, else the response of the one that did."""
        deadline = time.monotonic() + _WAIT_S
        delay = 0.01
        while True:
            try:
                self._store._write(
                    lambda c: c.execute(
                        sa.insert(_keys).values(key=full, state="pending", created_at=_now_ms())
                    )
                )
            except IntegrityError:
                pass
            except Exception as exc:  # the store wraps driver errors; unique violations included
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
            else:
                self._prune_now_and_then()
                return None
            row = self._store._read(
                lambda c: c.execute(
                    sa.select(_keys.c.state, _keys.c.status, _keys.c.body).where(
                        _keys.c.key == full
                    )
                ).first()
            )
            if row is not None and row.state == "done":
                return StoredResponse(int(row.status), bytes(row.body or b""))
            if row is None:
                continue  # the first request failed and released the key: claim it now
            if time.monotonic() > deadline:
                raise Conflict(
                    "a request with this idempotency key is still being processed; retry later"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _prune_now_and_then(self) -> None:
        with self._lock:
            self._claims += 1
            if self._claims % 1000 != 1:
                return
        cutoff = _now_ms() - _KEEP_MS
        self._store._write(lambda c: c.execute(sa.delete(_keys).where(_keys.c.created_at < cutoff)))
