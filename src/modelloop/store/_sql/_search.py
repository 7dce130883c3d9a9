"""``search_runs``: one query for the page, then one each for its params, metrics and tags.

Pages are keyset pages: a token holds the sort key values of the page's last row (run id last)
and the next page is the rows that sort strictly after it, so runs created or changed meanwhile
never shift later pages the way an offset would.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from modelloop.exceptions import InvalidInput
from modelloop.store._records import Page, Run
from modelloop.store._sql import _schema as T
from modelloop.store._sql._core import SqlCore, check_int
from modelloop.store._sql._filter import (
    SortKey,
    compile_filter,
    compile_order,
    compile_order_by_metric,
    order_terms,
    parse_filter,
    parse_order,
)

__all__ = ["MAX_RESULTS", "SearchMixin"]

MAX_RESULTS = 50_000

#: below this many runs in the searched experiments, sorting them all is cheap
_SMALL_SEARCH = 2_000


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _encode_token(last: Sequence[object], fingerprint: str) -> str:
    """A token naming the last row of a page by its sort key values (run id last)."""
    raw = json.dumps(
        {"k": list(last[:-1]), "r": last[-1], "f": fingerprint}, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(
    token: str | None, fingerprint: str, keys: tuple[SortKey, ...]
) -> list[object] | None:
    """The sort key values of the previous page's last row, or None for the first page."""
    if token is None or token == "":
        return None
    bad = InvalidInput(f"page_token {str(token)[:40]!r} was not returned by search_runs")
    if not isinstance(token, str):
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values, run_id, found = data["k"], data["r"], data["f"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise bad from None
    if found != fingerprint:
        raise InvalidInput(
            "page_token belongs to another search (other experiments, filter or order_by); "
            "start again without a token"
        )
    if not isinstance(values, list) or len(values) != len(keys) - 1:
        raise bad
    last = [*values, run_id]
    for key, value in zip(keys, last, strict=True):
        if value is None:
            ok = key.nullable
        elif key.numeric:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise bad
    return last


def _after(keys: tuple[SortKey, ...], last: Sequence[object]) -> ColumnElement[bool]:
    """Rows that sort strictly after ``last`` (one value per key): after it on some key and
    equal on every key before. NULL sorts last in either direction, so nothing sorts after a
    NULL on its own key and the rows that do sort after a value include the NULLs."""
    either: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for key, value in zip(keys, last, strict=True):
        col = key.column
        if value is None:
            equal.append(col.is_(None))
            continue
        past = col < value if key.descending else col > value
        if key.nullable:
            past = sa.or_(past, col.is_(None))
        either.append(sa.and_(*equal, past))
        equal.append(col == value)
    condition = sa.or_(*either)
    first, value = keys[0], last[0]
    if not first.nullable:
        # Implied by the disjunction; stated so an index on the first key bounds the scan.
        bound = first.column <= value if first.descending else first.column >= value
        condition = sa.and_(bound, condition)
    return condition


def _metric_walk_pays(conn: Connection, ids: tuple[int, ...], key: str) -> bool:
    """Whether reading the runs in ``key``'s order from its value index beats sorting every run
    of the experiments: when they are many, and hold a fair share of the runs with the metric
    (else the walk would mostly pass over other experiments' runs). Two index-only counts."""
    cap = 1_000_000
    in_experiments = sa.select(sa.literal(1)).where(T.runs.c.experiment_id.in_(ids)).limit(cap)
    n_runs = conn.execute(sa.select(sa.func.count()).select_from(in_experiments.subquery()))
    n = int(n_runs.scalar_one())
    if n < _SMALL_SEARCH:
        return False
    most = n * n // 1000  # walking up to n*n/1000 index entries still beats sorting n runs
    lm = T.latest_metrics
    with_key = sa.select(sa.literal(1)).where(lm.c.key == key).limit(most + 1)
    found = conn.execute(sa.select(sa.func.count()).select_from(with_key.subquery()))
    return int(found.scalar_one()) <= most


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
    ) -> Page[Run]:
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
        from_, keys = compile_order(order)
        last = _decode_token(page_token, fingerprint, keys)
        if not ids:
            return Page(())
        # The sort key values ride along so the page's last row can name where the next starts.
        labels = [f"sort_{i}" for i in range(len(keys) - 1)]
        base = (
            sa.select(T.runs, *(k.column.label(n) for k, n in zip(keys, labels, strict=False)))
            .select_from(from_)
            .where(T.runs.c.experiment_id.in_(ids), *compile_filter(clauses))
        )
        stmt = base.order_by(*order_terms(keys)).limit(max_results + 1)
        by_metric = compile_order_by_metric(order)
        if last is not None:
            stmt = stmt.where(_after(keys, last))

        def tx(conn: Connection) -> Page[Run]:
            if (
                by_metric is not None
                and (last is None or last[0] is not None)
                and _metric_walk_pays(conn, ids, order[0].key)
            ):
                m_from, m_keys = by_metric
                valued = (
                    sa.select(
                        T.runs, *(k.column.label(n) for k, n in zip(m_keys, labels, strict=False))
                    )
                    .select_from(m_from)
                    .where(
                        m_keys[0].column.is_not(None),
                        T.runs.c.experiment_id.in_(ids),
                        *compile_filter(clauses),
                    )
                    .order_by(*order_terms(m_keys))
                    .limit(max_results + 1)
                )
                if last is not None:
                    valued = valued.where(_after(m_keys, last))
                rows = list(conn.execute(valued).all())
                if len(rows) <= max_results:  # then the runs without a value, which sort last
                    rest = (
                        base.where(keys[0].column.is_(None))
                        .order_by(*order_terms(keys))
                        .limit(max_results + 1 - len(rows))
                    )
                    rows += conn.execute(rest).all()
            else:
                rows = list(conn.execute(stmt).all())
            page = rows[:max_results]
            runs = self._load_runs(conn, page)
            token = None
            if len(rows) > max_results:
                end = page[-1]._mapping
                token = _encode_token([*(end[n] for n in labels), end["run_id"]], fingerprint)
            return Page(tuple(runs), token)

        return self._read(tx)
