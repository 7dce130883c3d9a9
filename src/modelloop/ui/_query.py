"""The state of a runs table as it lives in the URL: filter, sort, columns, page.

Everything a user sets on the runs page is a query parameter, so a URL copied from the address
bar shows the same table to a colleague.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from modelloop.exceptions import InvalidInput
from modelloop.store import Run

__all__ = ["Column", "TableState", "column_value", "default_columns"]

PAGE_SIZES = (25, 50, 100, 200, 500)
_DEFAULT_SIZE = 50
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ENTITIES = ("metrics", "params", "tags")


@dataclass(frozen=True, slots=True)
class Column:
    """A data column of the runs table: ``entity`` is metrics, params or tags."""

    entity: str
    key: str

    @property
    def ref(self) -> str:
        """``metrics.auc``: how the column is named in the URL."""
        return f"{self.entity}.{self.key}"

    @property
    def order_ref(self) -> str:
        """The column in the search grammar (keys other than plain words are back-quoted)."""
        key = self.key if _PLAIN_KEY.match(self.key) else f"`{self.key}`"
        return f"{self.entity}.{key}"

    @classmethod
    def parse(cls, ref: str) -> Column:
        entity, dot, key = ref.partition(".")
        if not dot or entity not in _ENTITIES or not key:
            raise InvalidInput(f"column {ref!r}: use metrics.KEY, params.KEY or tags.KEY")
        if "`" in key:
            raise InvalidInput(f"column {ref!r}: a key cannot hold a back-quote")
        return cls(entity, key)


#: sortable attribute columns: URL name -> order_by name
ATTRIBUTE_SORTS = {"name": "attributes.run_name", "start": "attributes.start_time"}


@dataclass(frozen=True, slots=True)
class TableState:
    """Filter, sort, chosen columns, page token, page size and the tokens of earlier pages."""

    filter: str = ""
    sort: str = ""  # a column ref or an ATTRIBUTE_SORTS key; "" = newest first
    descending: bool = True
    columns: tuple[Column, ...] | None = None  # None: chosen from the runs shown
    page_token: str | None = None
    back: tuple[str, ...] = ()  # tokens of the earlier pages ("" = first page)
    size: int = _DEFAULT_SIZE

    @classmethod
    def from_query(cls, params: Iterable[tuple[str, str]]) -> TableState:
        """Read the state from query parameters; ``InvalidInput`` names a bad one."""
        multi: dict[str, list[str]] = {}
        for k, v in params:
            multi.setdefault(k, []).append(v)

        def one(name: str) -> str:
            values = multi.get(name, [])
            return values[-1] if values else ""

        size_text = one("n") or str(_DEFAULT_SIZE)
        if not size_text.isdigit() or int(size_text) not in PAGE_SIZES:
            raise InvalidInput(f"page size n={size_text!r}: use one of {list(PAGE_SIZES)}")
        sort = one("sort")
        if sort and sort not in ATTRIBUTE_SORTS:
            Column.parse(sort)
        direction = one("dir").lower() or "desc"
        if direction not in ("asc", "desc"):
            raise InvalidInput(f"sort direction dir={direction!r}: use asc or desc")
        cols = [c for c in multi.get("col", []) if c]
        columns = tuple(dict.fromkeys(Column.parse(c) for c in cols)) if cols else None
        return cls(
            filter=one("filter").strip(),
            sort=sort,
            descending=direction == "desc",
            columns=columns,
            page_token=one("page") or None,
            back=tuple(multi.get("back", [])),
            size=int(size_text),
        )

    @property
    def order_by(self) -> list[str]:
        """``order_by`` for :meth:`~modelloop.store.Store.search_runs`."""
        if not self.sort:
            return []
        target = ATTRIBUTE_SORTS.get(self.sort) or Column.parse(self.sort).order_ref
        return [f"{target} {'DESC' if self.descending else 'ASC'}"]

    def query(self, **changes: object) -> str:
        """The query string of this state with ``changes`` applied (a page change keeps the
        rest; any other change starts again at the first page)."""
        state = replace(self, **changes)  # type: ignore[arg-type]
        if not {"page_token", "back"} & changes.keys():
            state = replace(state, page_token=None, back=())
        pairs: list[tuple[str, str]] = []
        if state.filter:
            pairs.append(("filter", state.filter))
        if state.sort:
            pairs += [("sort", state.sort), ("dir", "desc" if state.descending else "asc")]
        for c in state.columns or ():
            pairs.append(("col", c.ref))
        if state.size != _DEFAULT_SIZE:
            pairs.append(("n", str(state.size)))
        pairs += [("back", b) for b in state.back]
        if state.page_token:
            pairs.append(("page", state.page_token))
        return urlencode(pairs)

    def sort_query(self, sort: str) -> str:
        """The query for a click on a column header: sort by it, or flip its direction."""
        descending = not self.descending if self.sort == sort else True
        return self.query(sort=sort, descending=descending)

    def next_query(self, token: str) -> str:
        return self.query(page_token=token, back=(*self.back, self.page_token or ""))

    def previous_query(self) -> str | None:
        if not self.back:
            return None
        return self.query(page_token=self.back[-1] or None, back=self.back[:-1])


def default_columns(runs: Sequence[Run], limit: int = 12) -> tuple[Column, ...]:
    """The metrics then params that the shown runs carry, at most ``limit``."""
    metrics = sorted({k for r in runs for k in r.metrics})
    params = sorted({k for r in runs for k in r.params})
    cols = [Column("metrics", k) for k in metrics] + [Column("params", k) for k in params]
    return tuple(cols[:limit])


def available_columns(runs: Sequence[Run], chosen: Sequence[Column]) -> tuple[Column, ...]:
    """Every metric, param and tag key of the shown runs, plus the chosen ones."""
    found = {Column("metrics", k) for r in runs for k in r.metrics}
    found |= {Column("params", k) for r in runs for k in r.params}
    found |= {Column("tags", k) for r in runs for k in r.tags if not k.startswith("modelloop.")}
    found |= set(chosen)
    order = {e: i for i, e in enumerate(_ENTITIES)}
    return tuple(sorted(found, key=lambda c: (order[c.entity], c.key)))


def column_value(run: Run, column: Column) -> object:
    """The run's value in a column, or None."""
    mapping = {"metrics": run.metrics, "params": run.params, "tags": run.tags}[column.entity]
    return mapping.get(column.key)
