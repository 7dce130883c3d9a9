"""The run search language: parse ``filter`` and ``order_by`` strings, compile them to SQL.

Filter grammar (see ``Store.search_runs``)::

    filter  := clause ( AND clause )*                  AND is case-insensitive
    clause  := entity "." key op value
    entity  := metrics | params | tags | attributes
    key     := letters, digits, _ - / :  |  `any text without back-quotes`
    op      := = | != | < | <= | > | >= | like | ilike  (like/ilike: case-insensitive keywords)
    value   := number | 'text' | "text"

Metrics and the time attributes compare numbers; params, tags and the text attributes compare
quoted strings with ``=``, ``!=``, ``like`` and ``ilike``. NaN metric values compare unequal to
everything (``!=`` matches them, nothing else does), as in IEEE arithmetic.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Join

from modelloop.exceptions import InvalidInput
from modelloop.store._sql import _schema as T

__all__ = [
    "Clause",
    "OrderKey",
    "SortKey",
    "compile_filter",
    "compile_order",
    "compile_order_by_metric",
    "order_terms",
    "parse_filter",
    "parse_order",
]

ENTITIES = ("metrics", "params", "tags", "attributes")
#: attribute key -> (column of ``runs``, numeric?)
ATTRIBUTES: dict[str, tuple[str, bool]] = {
    "status": ("status", False),
    "run_name": ("run_name", False),
    "start_time": ("start_time", True),
    "end_time": ("end_time", True),
    "user": ("user_name", False),
    "run_id": ("run_id", False),
}
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("=", "!=", "like", "ilike")

_WS = re.compile(r"\s*")
_WORD = re.compile(r"[A-Za-z_]+")
_KEY = re.compile(r"[\w\-/:]+")
_OP = re.compile(r"(<=|>=|!=|==|<>|=|<|>)|(like|ilike)(?![\w])", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])")
_AND = re.compile(r"and(?![\w])", re.IGNORECASE)
_DIRECTION = re.compile(r"(asc|desc)(?![\w])", re.IGNORECASE)
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Clause:
    entity: str
    key: str
    op: str
    value: str | float


@dataclass(frozen=True, slots=True)
class OrderKey:
    entity: str
    key: str
    descending: bool


class _Scanner:
    """A cursor over the text; every error names the token at the cursor and its position."""

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.pos = 0
        self.what = what

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        self.skip_ws()
        m = pattern.match(self.text, self.pos)
        if m:
            self.pos = m.end()
        return m

    def token(self) -> str:
        m = _TOKEN.search(self.text, self.pos)
        return m.group(0)[:40] if m else ""

    def fail(self, problem: str, *, at: int | None = None) -> InvalidInput:
        pos = self.pos if at is None else at
        return InvalidInput(f"bad {self.what} {self.text!r}: {problem} (at position {pos})")

    def entity_and_key(self, *, allow_bare_attribute: bool = False) -> tuple[str, str]:
        self.skip_ws()
        start = self.pos
        m = _WORD.match(self.text, self.pos)
        if not m:
            raise self.fail(
                f"expected metrics., params., tags. or attributes., got {self.token()!r}"
            )
        word = m.group(0)
        self.pos = m.end()
        if self.text[self.pos : self.pos + 1] != ".":
            if allow_bare_attribute:
                return "attributes", self._attribute(word, start)
            if word.lower() in ENTITIES:
                raise self.fail(f"expected '.' and a key after {word!r}, got {self.token()!r}")
            raise self.fail(
                f"unknown entity {word!r}; expected metrics, params, tags or attributes", at=start
            )
        entity = word.lower()
        if entity not in ENTITIES:
            raise self.fail(
                f"unknown entity {word!r}; expected metrics, params, tags or attributes", at=start
            )
        self.pos += 1
        key = self._key()
        if entity == "attributes":
            key = self._attribute(key, start)
        return entity, key

    def _key(self) -> str:
        if self.text[self.pos : self.pos + 1] == "`":
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise self.fail("unterminated back-quoted key")
            key = self.text[self.pos + 1 : end]
            if not key:
                raise self.fail("empty back-quoted key")
            self.pos = end + 1
            return key
        m = _KEY.match(self.text, self.pos)
        if not m:
            raise self.fail(
                f"expected a key after the dot, got {self.token()!r} "
                "(back-quote keys with spaces or dots: `my key`)"
            )
        self.pos = m.end()
        return m.group(0)

    def _attribute(self, key: str, start: int) -> str:
        if key not in ATTRIBUTES:
            raise self.fail(
                f"unknown attribute {key!r}; expected one of {', '.join(ATTRIBUTES)}", at=start
            )
        return key


@functools.lru_cache(maxsize=256)
def parse_filter(text: str) -> tuple[Clause, ...]:
    """The clauses of a filter string (all must hold); ``InvalidInput`` naming the bad token."""
    if not isinstance(text, str):
        raise InvalidInput(f"filter must be a string, not {type(text).__name__}")
    s = _Scanner(text, "filter")
    clauses: list[Clause] = []
    if s.at_end():
        return ()
    while True:
        clauses.append(_clause(s))
        if s.at_end():
            return tuple(clauses)
        if not s.match(_AND):
            raise s.fail(f"expected 'and' or the end of the filter, got {s.token()!r}")
        if s.at_end():
            raise s.fail("the filter ends after 'and'")


def _clause(s: _Scanner) -> Clause:
    s.skip_ws()
    entity, key = s.entity_and_key()
    name = f"{entity}.{key}"
    op_at = s.pos
    m = s.match(_OP)
    if not m:
        raise s.fail(f"expected an operator after {name}, got {s.token()!r}")
    op = m.group(0).lower()
    if op in ("==", "<>"):
        raise s.fail(f"unknown operator {op!r}; use {'=' if op == '==' else '!='}", at=op_at)
    numeric = entity == "metrics" or (entity == "attributes" and ATTRIBUTES[key][1])
    allowed = NUMERIC_OPS if numeric else TEXT_OPS
    if op not in allowed:
        raise s.fail(
            f"operator {m.group(0)!r} does not apply to {name}; use one of {' '.join(allowed)}",
            at=op_at,
        )
    s.skip_ws()
    value_at = s.pos
    quote = s.text[s.pos : s.pos + 1]
    if quote in ("'", '"'):
        end = s.text.find(quote, s.pos + 1)
        if end < 0:
            raise s.fail("unterminated string")
        value: str | float = s.text[s.pos + 1 : end]
        s.pos = end + 1
        if numeric:
            raise s.fail(
                f"{name} compares numbers; got the string {quote}{value}{quote}", at=value_at
            )
        return Clause(entity, key, op, value)
    m = _NUMBER.match(s.text, s.pos)
    if not m:
        got = s.token()
        raise s.fail(
            f"expected a {'number' if numeric else 'quoted string'} after {name} {op}, got {got!r}"
            if got
            else f"expected a value after {name} {op}"
        )
    if not numeric:
        raise s.fail(f"{name} compares strings; quote the value {m.group(0)!r}", at=value_at)
    s.pos = m.end()
    return Clause(entity, key, op, float(m.group(0)))


@functools.lru_cache(maxsize=256)
def parse_order(items: tuple[str, ...]) -> tuple[OrderKey, ...]:
    """Parse ``order_by`` items such as ``"metrics.loss"``, ``"start_time DESC"``."""
    keys = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"order_by items must be strings, not {type(item).__name__}")
        s = _Scanner(item, "order_by item")
        if s.at_end():
            raise s.fail("empty item")
        entity, key = s.entity_and_key(allow_bare_attribute=True)
        descending = False
        if not s.at_end():
            m = s.match(_DIRECTION)
            if not m:
                raise s.fail(f"expected ASC or DESC, got {s.token()!r}")
            descending = m.group(0).lower() == "desc"
            if not s.at_end():
                raise s.fail(f"unexpected {s.token()!r} after the direction")
        keys.append(OrderKey(entity, key, descending))
    return tuple(keys)


_ENTITY_TABLES = {"metrics": T.latest_metrics, "params": T.params, "tags": T.tags}


@functools.lru_cache(maxsize=256)
def compile_filter(clauses: tuple[Clause, ...]) -> tuple[ColumnElement[bool], ...]:
    """SQL conditions on ``runs`` for the clauses: EXISTS on the key/value tables."""
    runs = T.runs
    conditions: list[ColumnElement[bool]] = []
    for c in clauses:
        if c.entity == "attributes":
            conditions.append(_compare(runs.c[ATTRIBUTES[c.key][0]], c.op, c.value))
            continue
        table = _ENTITY_TABLES[c.entity]
        cond = _compare(table.c.value, c.op, c.value)
        if c.entity == "metrics" and c.op == "!=":
            cond = sa.or_(cond, table.c.value.is_(None))  # NULL stores NaN, unequal to all
        conditions.append(
            sa.exists().where(table.c.run_id == runs.c.run_id, table.c.key == c.key, cond)
        )
    return tuple(conditions)


def _compare(col: ColumnElement, op: str, value: str | float) -> ColumnElement[bool]:
    if op == "=":
        return col == value
    if op == "!=":
        return col != value
    if op == "<":
        return col < value
    if op == "<=":
        return col <= value
    if op == ">":
        return col > value
    if op == ">=":
        return col >= value
    if op == "like":
        return col.like(value, escape="\\")
    return col.ilike(value, escape="\\")


@dataclass(frozen=True, slots=True, eq=False)  # eq on SQL columns would build SQL
class SortKey:
    """One ORDER BY key: its SQL expression, direction, whether it can be NULL (a run without
    the key, or a NaN metric: sorted last either way) and whether it holds numbers."""

    column: ColumnElement
    descending: bool
    nullable: bool
    numeric: bool


@functools.lru_cache(maxsize=256)
def compile_order(order: tuple[OrderKey, ...]) -> tuple[sa.FromClause, tuple[SortKey, ...]]:
    """``runs`` outer-joined to what the order needs, and the sort keys, run id last.

    Runs without the key (or with a NaN metric) come last in either direction; the run id breaks
    ties so that the order is total (keyset pages rely on it). The default order is newest start
    time first.
    """
    runs = T.runs
    from_: sa.FromClause = runs
    keys: list[SortKey] = []
    for i, o in enumerate(order):
        if o.entity == "attributes":
            name, numeric = ATTRIBUTES[o.key]
            col = runs.c[name]
            keys.append(SortKey(col, o.descending, col.nullable or False, numeric))
        else:
            alias = _ENTITY_TABLES[o.entity].alias(f"order_{i}")
            from_ = from_.outerjoin(
                alias, sa.and_(alias.c.run_id == runs.c.run_id, alias.c.key == o.key)
            )
            keys.append(SortKey(alias.c.value, o.descending, True, o.entity == "metrics"))
    if not order:
        keys.append(SortKey(runs.c.start_time, True, False, True))
    keys.append(SortKey(runs.c.run_id, False, False, False))
    return from_, tuple(keys)


def order_terms(keys: tuple[SortKey, ...]) -> tuple[ColumnElement, ...]:
    """The ORDER BY terms of the sort keys."""
    terms = []
    for k in keys:
        term = k.column.desc() if k.descending else k.column.asc()
        terms.append(term.nulls_last() if k.nullable else term)
    return tuple(terms)


class _DrivingJoin(Join):
    """An inner join whose left side is read first: SQLite is told so with ``CROSS JOIN``
    (its planner keeps that order); other backends get a plain ``JOIN`` and plan it."""

    inherit_cache = True


@compiles(_DrivingJoin, "sqlite")
def _sqlite_driving_join(join: _DrivingJoin, compiler: Any, **kw: Any) -> str:
    kw["asfrom"] = True
    left = compiler.process(join.left, **kw)
    right = compiler.process(join.right, **kw)
    return f"{left} CROSS JOIN {right} ON {compiler.process(join.onclause, **kw)}"


@functools.lru_cache(maxsize=256)
def compile_order_by_metric(
    order: tuple[OrderKey, ...],
) -> tuple[sa.FromClause, tuple[SortKey, ...]] | None:
    """For an order whose first key is a metric: the runs that have a (non-NaN) value of it,
    read in that metric's order from ``ix_latest_metrics_key_value``, and their sort keys
    (the same columns as :func:`compile_order`'s, so page tokens are shared). None for any
    other order.

    Together with :func:`compile_order`'s rows whose first key is NULL (which sort after them),
    these are the whole ordered result; reading them first lets a page stop after a few rows
    of the index instead of sorting every run of the experiments.
    """
    if not order or order[0].entity != "metrics":
        return None
    from_, keys = compile_order(order)
    first = keys[0]
    table = first.column.table
    runs = T.runs
    on = sa.and_(table.c.run_id == runs.c.run_id, table.c.key == order[0].key)
    joined: sa.FromClause = _DrivingJoin(table, runs, on)
    # The other keys' outer joins, as compile_order made them (their aliases are reused).
    rest = from_
    outer: list[Join] = []
    while isinstance(rest, Join):
        outer.append(rest)
        rest = rest.left
    for j in reversed(outer[:-1]):  # outer[-1] is runs ⟕ the first key's alias
        joined = joined.outerjoin(j.right, j.onclause)
    keys = (SortKey(first.column, first.descending, False, first.numeric), *keys[1:])
    return joined, keys
