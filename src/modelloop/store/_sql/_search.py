"""``search_runs``: one query for the page, then one each for its params, metrics and tags."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelloop.exceptions import InvalidInput
from modelloop.store._records import Page
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int
from modelloop.store._sql._filter import compile_filter, compile_order, parse_filter, parse_order

__all__ = ["MAX_RESULTS", "SearchMixin"]

MAX_RESULTS = 50_000


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _encode_token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"o": offset, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str | None, fingerprint: str) -> int:
    if token is None or token == "":
        return 0
    bad = InvalidInput(f"page_token {str(token)[:40]!r} was not returned by search_runs")
    if not isinstance(token, str):
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, found = data["o"], data["f"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise bad from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise bad
    if found != fingerprint:
        raise InvalidInput(
            "page_token belongs to another search (other experiments, filter or order_by); "
            "start again without a token"
        )
    return offset


class SearchMixin(SqlCore):
    """Run search pushed down to SQL."""

    def search_runs(
        self,
        experiment_ids: Sequence[int],
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page:
        if isinstance(experiment_ids, (str, bytes)) or not isinstance(experiment_ids, Iterable):
            raise InvalidInput(f"experiment_ids must be a list of ids, got {experiment_ids!r}")
        ids = tuple(sorted({check_int(e, "experiment id") for e in experiment_ids}))
        if isinstance(order_by, str):
            order_by = (order_by,)
        max_results = check_int(max_results, "max_results")
        if not 1 <= max_results <= MAX_RESULTS:
            raise InvalidInput(
                f"max_results must be between 1 and {MAX_RESULTS}, got {max_results}"
            )
        clauses = parse_filter(filter or "")
        order = parse_order(tuple(order_by))
        fingerprint = _fingerprint(ids, clauses, order)
        offset = _decode_token(page_token, fingerprint)
        if not ids:
            return Page(())
        from_, terms = compile_order(order)
        stmt = (
            sa.select(T.runs)
            .select_from(from_)
            .where(T.runs.c.experiment_id.in_(ids), *compile_filter(clauses))
            .order_by(*terms)
            .limit(max_results + 1)
            .offset(offset)
        )

        def tx(conn: Connection) -> Page:
            rows = conn.execute(stmt).all()
            runs = self._load_runs(conn, rows[:max_results])
            more = len(rows) > max_results
            token = _encode_token(offset + max_results, fingerprint) if more else None
            return Page(tuple(runs), token)

        return self._read(tx)
