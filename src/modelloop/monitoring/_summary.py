"""What a drift run needs to know about the current window, counted on the reference's edges.

A numeric column is reduced to its CDF at the reference edges (values below and at each edge) plus a
few sums; a categorical column to counts per category. Both are additive, so
:class:`WindowAccumulator` can take a window batch by batch and never hold it whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._columns import (
    count_categories,
    get_column,
    num_rows,
    to_epoch_ns,
    to_float_array,
)
from modelloop.monitoring._profile import (
    CategoricalProfile,
    ColumnProfile,
    Counted,
    DatetimeProfile,
    IdentifierProfile,
    NumericProfile,
    ReferenceProfile,
    finite_sorted,
)

__all__ = [
    "CategoricalSummary",
    "ColumnSummary",
    "DatetimeSummary",
    "IdentifierSummary",
    "NumericSummary",
    "WindowAccumulator",
    "WindowSummary",
    "summarize",
]


@dataclass(frozen=True, eq=False)
class NumericSummary(Counted):
    """A numeric column of the current window, seen through the reference edges.

    ``lt[j]`` / ``le[j]`` count finite values below / at-or-below ``edges[j]``; ``below_sum`` is
    ``sum(edges[0] - x)`` over values below the reference minimum and ``above_sum`` is
    ``sum(x - edges[-1])`` over values above the maximum (they make Wasserstein tails exact).
    """

    name: str
    count: int
    missing: int
    lt: np.ndarray
    le: np.ndarray
    below_sum: float = 0.0
    above_sum: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0
    min: float | None = None
    max: float | None = None

    kind = "numeric"

    @classmethod
    def from_values(cls, values: Any, reference: NumericProfile) -> NumericSummary:
        f, missing = finite_sorted(to_float_array(values, reference.name))
        edges = reference.edges
        lt = np.searchsorted(f, edges, side="left")
        le = np.searchsorted(f, edges, side="right")
        below = above = 0.0
        if len(edges) and len(f):
            nb, na = int(lt[0]), int(le[-1])
            below = float(edges[0] * nb - f[:nb].sum())
            above = float(f[na:].sum() - edges[-1] * (len(f) - na))
        return cls(
            name=reference.name,
            count=len(f),
            missing=missing,
            lt=lt.astype(np.int64),
            le=le.astype(np.int64),
            below_sum=below,
            above_sum=above,
            total=float(f.sum()),
            total_sq=float(np.einsum("i,i->", f, f)),  # not np.dot: BLAS threads spin
            min=float(f[0]) if len(f) else None,
            max=float(f[-1]) if len(f) else None,
        )

    def merge(self, other: NumericSummary) -> NumericSummary:
        """The summary of both windows together."""
        mins = [m for m in (self.min, other.min) if m is not None]
        maxs = [m for m in (self.max, other.max) if m is not None]
        return NumericSummary(
            name=self.name,
            count=self.count + other.count,
            missing=self.missing + other.missing,
            lt=self.lt + other.lt,
            le=self.le + other.le,
            below_sum=self.below_sum + other.below_sum,
            above_sum=self.above_sum + other.above_sum,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            min=min(mins) if mins else None,
            max=max(maxs) if maxs else None,
        )

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def std(self) -> float | None:
        if self.count < 2:
            return None
        var = (self.total_sq - self.total**2 / self.count) / (self.count - 1)
        return float(np.sqrt(max(var, 0.0)))

    @property
    def below_count(self) -> int:
        """Finite values below the reference minimum."""
        return int(self.lt[0]) if len(self.lt) else 0

    @property
    def above_count(self) -> int:
        """Finite values above the reference maximum."""
        return self.count - int(self.le[-1]) if len(self.le) else 0


@dataclass(frozen=True)
class CategoricalSummary(Counted):
    """A categorical column of the current window: counts per category and missing count."""

    name: str
    count: int
    missing: int
    categories: Mapping[str, int] = field(default_factory=dict)

    kind = "categorical"

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", MappingProxyType(dict(self.categories)))

    @classmethod
    def from_values(cls, values: Any, reference: CategoricalProfile) -> CategoricalSummary:
        counts, missing = count_categories(values)
        return cls(reference.name, sum(counts.values()), missing, counts)

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        cats = dict(self.categories)
        for k, v in other.categories.items():
            cats[k] = cats.get(k, 0) + v
        return CategoricalSummary(
            self.name, self.count + other.count, self.missing + other.missing, cats
        )


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(frozen=True)
class DatetimeSummary(Counted):
    """A datetime column of the current window: its range and how many values lie before the
    reference's first or after its last instant (epoch nanoseconds, UTC)."""

    name: str
    count: int
    missing: int
    min: int | None = None
    max: int | None = None
    before: int = 0
    after: int = 0

    kind = "datetime"

    @classmethod
    def from_values(cls, values: Any, reference: DatetimeProfile) -> DatetimeSummary:
        ns, missing = to_epoch_ns(values, reference.name)
        if len(ns) == 0:
            return cls(reference.name, 0, missing)
        before = int((ns < reference.min).sum()) if reference.min is not None else 0
        after = int((ns > reference.max).sum()) if reference.max is not None else len(ns)
        return cls(reference.name, len(ns), missing, int(ns.min()), int(ns.max()), before, after)

    def merge(self, other: DatetimeSummary) -> DatetimeSummary:
        return DatetimeSummary(
            self.name,
            self.count + other.count,
            self.missing + other.missing,
            _min(self.min, other.min),
            _max(self.max, other.max),
            self.before + other.before,
            self.after + other.after,
        )


@dataclass(frozen=True)
class IdentifierSummary(Counted):
    """An identifier column of the current window: counts only."""

    name: str
    count: int
    missing: int

    kind = "identifier"

    @classmethod
    def from_values(cls, values: Any, reference: IdentifierProfile) -> IdentifierSummary:
        n = num_rows({reference.name: values})
        if hasattr(values, "null_count"):  # pyarrow
            missing = int(values.null_count)
        else:
            import pandas as pd

            missing = int(pd.Series(values).isna().sum())
        return cls(reference.name, n - missing, missing)

    def merge(self, other: IdentifierSummary) -> IdentifierSummary:
        return IdentifierSummary(self.name, self.count + other.count, self.missing + other.missing)


ColumnSummary = NumericSummary | CategoricalSummary | DatetimeSummary | IdentifierSummary


def _summarize_column(values: Any, reference: ColumnProfile) -> ColumnSummary:
    if isinstance(reference, NumericProfile):
        return NumericSummary.from_values(values, reference)
    if isinstance(reference, DatetimeProfile):
        return DatetimeSummary.from_values(values, reference)
    if isinstance(reference, IdentifierProfile):
        return IdentifierSummary.from_values(values, reference)
    return CategoricalSummary.from_values(values, reference)


@dataclass(frozen=True)
class WindowSummary:
    """Summaries of every profiled column of one current window."""

    columns: Mapping[str, ColumnSummary]
    n_rows: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))


def summarize(
    profile: ReferenceProfile, data: Any, columns: Iterable[str] | None = None
) -> WindowSummary:
    """Summarise a whole window (DataFrame, pyarrow Table / RecordBatch, mapping) in one pass."""
    acc = WindowAccumulator(profile, columns)
    acc.update(data)
    return acc.summary()


class WindowAccumulator:
    """Summarise a window batch by batch: ``update(batch)`` any number of times, then ``summary()``.

    Memory is bounded by one batch plus the reference edges, whatever the window size.
    """

    def __init__(self, profile: ReferenceProfile, columns: Iterable[str] | None = None) -> None:
        names = list(columns) if columns is not None else list(profile.columns)
        for n in names:
            profile[n]  # raises InvalidInput for a column the profile does not know
        self.profile = profile
        self.names = names
        self._parts: dict[str, ColumnSummary] = {}
        self.n_rows = 0
        self.n_batches = 0

    def update(self, batch: Any) -> WindowAccumulator:
        """Add one batch (DataFrame, pyarrow RecordBatch / Table, mapping of columns)."""
        for name in self.names:
            part = _summarize_column(get_column(batch, name), self.profile[name])
            prev = self._parts.get(name)
            self._parts[name] = part if prev is None else prev.merge(part)  # type: ignore[arg-type]
        self.n_rows += num_rows(batch)
        self.n_batches += 1
        return self

    def update_many(self, batches: Iterable[Any]) -> WindowAccumulator:
        for b in batches:
            self.update(b)
        return self

    def summary(self) -> WindowSummary:
        """The window so far. An accumulator that saw no batch gives empty column summaries."""
        cols: dict[str, ColumnSummary] = {}
        for name in self.names:
            part = self._parts.get(name)
            if part is None:
                ref = self.profile[name]
                if isinstance(ref, NumericProfile):
                    z = np.zeros(len(ref.edges), dtype=np.int64)
                    part = NumericSummary(name, 0, 0, z, z.copy())
                elif isinstance(ref, DatetimeProfile):
                    part = DatetimeSummary(name, 0, 0)
                elif isinstance(ref, IdentifierProfile):
                    part = IdentifierSummary(name, 0, 0)
                else:
                    part = CategoricalSummary(name, 0, 0, {})
            cols[name] = part
        return WindowSummary(cols, self.n_rows)


def as_summary(
    profile: ReferenceProfile, current: Any, columns: Iterable[str] | None
) -> WindowSummary:
    """Accept a WindowSummary, an accumulator or a table, and give a WindowSummary."""
    if isinstance(current, WindowSummary):
        if columns is not None:
            missing = [c for c in columns if c not in current.columns]
            if missing:
                raise InvalidInput(f"the window summary lacks columns {missing}")
        return current
    if isinstance(current, WindowAccumulator):
        return current.summary()
    return summarize(profile, current, columns)
