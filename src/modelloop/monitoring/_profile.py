"""Reference profiles: what a drift run needs to know about the reference data, computed once.

A numeric column keeps a histogram on fixed edges taken from its own order statistics (roughly
equal-mass bins, the exact minimum and maximum included), so the reference data is never read again.

**Cells.** Edges ``e_0 < ... < e_B`` split the line into point cells ``{e_j}`` and open cells
``(e_j, e_{j+1})``; the profile stores the reference count of every cell, so the reference CDF is
known exactly just below and at every edge: ``F(e_j-)`` and ``F(e_j)``. A current window is counted
on the same edges (see :mod:`._summary`), which gives its CDF exactly at the same points.

**Error bound.** Between two edges both CDFs are unknown but monotone, so for ``x`` in the open cell
``(e_j, e_{j+1})`` with reference mass ``p_j`` and current mass ``q_j``::

    |F_r(x) - F_c(x)|  <=  max(F_r(e_{j+1}-) - F_c(e_j),  F_c(e_{j+1}-) - F_r(e_j))

Hence the KS statistic computed at the edges, ``D_edges``, satisfies
``D_edges <= D <= D_edges + max_j max(p_j, q_j)``; each KS result reports the exact data-dependent
bound (the left-hand expression maximised over cells, minus ``D_edges``). The Wasserstein distance
is integrated with both CDFs linear inside each open cell, and its error is at most
``sum_j w_j * (p_j + q_j)`` where ``w_j`` is the cell width (tails beyond the reference range are
integrated exactly). With ``n_bins`` edges at equal reference ranks, ``p_j <= 1/n_bins`` (ties fall
into point cells, which carry no error), so with the default 2048 bins the KS error on data like the
reference is about 0.0005. PSI uses coarse bins made of whole fine cells and is therefore exact.

**Datetimes and identifiers.** A timestamp or date column is its own kind: its profile keeps the
count, the range and a few quantiles (never every timestamp), and a window is judged by range and
recency, not by drift of its values (time moves on). A column whose values are nearly all distinct
— text with at least 95% distinct values, or integers with at least 99% distinct values that are
named like an identifier (``id``, ``*_id``, ``uuid``, ``key``) or form a dense run — is an
identifier: it is profiled by counts only and left out of drift with a note. Both need at least
:data:`MIN_IDENTIFIER_ROWS` values to be recognised; ``identifiers=`` names them explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._columns import (
    column_names,
    count_categories,
    decode_array,
    distinct_share,
    encode_array,
    get_column,
    is_datetime_column,
    is_integer_column,
    is_numeric_column,
    num_rows,
    to_epoch_ns,
    to_float_array,
)

__all__ = [
    "DEFAULT_BINS",
    "MIN_IDENTIFIER_ROWS",
    "QUANTILES",
    "CategoricalProfile",
    "ColumnProfile",
    "DatetimeProfile",
    "IdentifierProfile",
    "NumericProfile",
    "ReferenceProfile",
]

#: Number of fine bins per numeric column (edges at equal reference ranks).
DEFAULT_BINS = 2048
#: Quantiles kept in every numeric profile, for display and data-quality checks.
QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
FORMAT_VERSION = 1
#: Fewer present values than this never make an identifier (a small sample is often all distinct).
MIN_IDENTIFIER_ROWS = 200
_ID_NAME = re.compile(r"(^|[_\-.])(id|uuid|guid|key)$|^id[_\-.]|[a-z]Id$", re.IGNORECASE)


def finite_sorted(x: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values of ``x`` sorted, and how many values were not finite (NaN or ±inf)."""
    s = np.sort(x)
    # NaN sorts last and ±inf at the ends: three binary searches isolate the finite slice.
    lo = int(np.searchsorted(s, -np.inf, side="right"))
    hi = int(np.searchsorted(s, np.inf, side="left"))
    return s[lo:hi], len(s) - (hi - lo)


class Counted:
    """A column's count of present values and of missing ones (NaN, None, +/-inf)."""

    __slots__ = ()
    kind: ClassVar[str]
    name: str
    count: int
    missing: int

    @property
    def missing_rate(self) -> float:
        total = self.count + self.missing
        return self.missing / total if total else 0.0

    def _counted_dict(self) -> dict[str, Any]:
        """The keys every profile's ``to_dict`` starts with."""
        return {
            "kind": self.kind,
            "name": self.name,
            "count": self.count,
            "missing": self.missing,
        }


def _counted_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    """The name and counts of a profile's dict, as keyword arguments of its class."""
    return {"name": d["name"], "count": int(d["count"]), "missing": int(d["missing"])}


@dataclass(frozen=True, eq=False)
class NumericProfile(Counted):
    """A numeric reference column: statistics, quantiles and cell counts on fixed edges.

    ``counts`` has ``2 * len(edges) - 1`` entries: ``counts[2j]`` values equal to ``edges[j]`` and
    ``counts[2j + 1]`` values strictly between ``edges[j]`` and ``edges[j + 1]``. NaN and ±inf are
    counted as missing.
    """

    name: str
    count: int
    missing: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: Mapping[float, float]
    edges: np.ndarray
    counts: np.ndarray

    kind = "numeric"

    @classmethod
    def from_values(cls, values: Any, name: str = "", n_bins: int = DEFAULT_BINS) -> NumericProfile:
        """Profile raw values (any 1-d numeric container)."""
        if n_bins < 1:
            raise InvalidInput(f"n_bins must be at least 1, got {n_bins}")
        f, missing = finite_sorted(to_float_array(values, name))
        n = len(f)
        if n == 0:
            empty = np.empty(0)
            return cls(name, 0, missing, None, None, None, None, {}, empty, empty.astype(np.int64))
        ranks = np.unique(np.round(np.linspace(0, n - 1, n_bins + 1)).astype(np.int64))
        edges = np.unique(f[ranks])
        lt = np.searchsorted(f, edges, side="left")
        le = np.searchsorted(f, edges, side="right")
        counts = np.empty(2 * len(edges) - 1, dtype=np.int64)
        counts[0::2] = le - lt
        counts[1::2] = lt[1:] - le[:-1]
        qs = np.quantile(f, QUANTILES)
        return cls(
            name=name,
            count=n,
            missing=missing,
            mean=float(f.mean()),
            std=float(f.std(ddof=1)) if n > 1 else 0.0,
            min=float(f[0]),
            max=float(f[-1]),
            quantiles={q: float(v) for q, v in zip(QUANTILES, qs, strict=True)},
            edges=edges,
            counts=counts,
        )

    def __post_init__(self) -> None:
        for a in (self.edges, self.counts):
            a.flags.writeable = False
        object.__setattr__(self, "quantiles", MappingProxyType(dict(self.quantiles)))

    @cached_property
    def cum_lt(self) -> np.ndarray:
        """Number of reference values strictly below each edge."""
        return np.concatenate([[0], np.cumsum(self.counts)])[0::2]

    @cached_property
    def cum_le(self) -> np.ndarray:
        """Number of reference values at or below each edge."""
        return np.cumsum(self.counts)[0::2]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._counted_dict(),
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "quantiles": {repr(q): v for q, v in self.quantiles.items()},
            "edges": encode_array(self.edges),
            "counts": encode_array(self.counts),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        try:
            return cls(
                **_counted_fields(d),
                mean=d["mean"],
                std=d["std"],
                min=d["min"],
                max=d["max"],
                quantiles={float(q): float(v) for q, v in d["quantiles"].items()},
                edges=decode_array(d["edges"]).astype(np.float64),
                counts=decode_array(d["counts"]).astype(np.int64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed numeric profile: {exc!r}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumericProfile) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class CategoricalProfile(Counted):
    """A categorical reference column: counts per category (labels as strings) and missing count."""

    name: str
    count: int
    missing: int
    categories: Mapping[str, int] = field(default_factory=dict)

    kind = "categorical"

    @classmethod
    def from_values(cls, values: Any, name: str = "") -> CategoricalProfile:
        counts, missing = count_categories(values)
        ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return cls(name=name, count=sum(ordered.values()), missing=missing, categories=ordered)

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", MappingProxyType(dict(self.categories)))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._counted_dict(),
            "categories": dict(self.categories),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalProfile:
        try:
            cats = {str(k): int(v) for k, v in d["categories"].items()}
            return cls(**_counted_fields(d), categories=cats)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed categorical profile: {exc!r}") from exc

    def __hash__(self) -> int:
        return hash((self.name, self.count, self.missing, tuple(self.categories.items())))


def iso_ns(ns: int | None) -> str:
    """An epoch-nanosecond instant as ISO 8601 UTC text (seconds precision)."""
    if ns is None:
        return "—"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DatetimeProfile(Counted):
    """A datetime reference column: count, missing, range and quantiles, as epoch nanoseconds
    (UTC; naive values are read as UTC). Never every timestamp."""

    name: str
    count: int
    missing: int
    min: int | None
    max: int | None
    quantiles: Mapping[float, int] = field(default_factory=dict)

    kind = "datetime"

    @classmethod
    def from_values(cls, values: Any, name: str = "") -> DatetimeProfile:
        ns, missing = to_epoch_ns(values, name)
        if len(ns) == 0:
            return cls(name, 0, missing, None, None, {})
        qs = np.quantile(ns, QUANTILES, method="inverted_cdf")
        return cls(
            name=name,
            count=len(ns),
            missing=missing,
            min=int(ns.min()),
            max=int(ns.max()),
            quantiles={q: int(v) for q, v in zip(QUANTILES, qs, strict=True)},
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantiles", MappingProxyType(dict(self.quantiles)))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._counted_dict(),
            "min": self.min,
            "max": self.max,
            "quantiles": {repr(q): v for q, v in self.quantiles.items()},
            "range": [iso_ns(self.min), iso_ns(self.max)],  # for readers; ignored by from_dict
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatetimeProfile:
        try:
            return cls(
                **_counted_fields(d),
                min=None if d["min"] is None else int(d["min"]),
                max=None if d["max"] is None else int(d["max"]),
                quantiles={float(q): int(v) for q, v in d["quantiles"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"malformed datetime profile: {exc!r}") from exc

    def __hash__(self) -> int:
        return hash((self.name, self.count, self.missing, self.min, self.max))


@dataclass(frozen=True)
class IdentifierProfile(Counted):
    """A near-unique identifier column: counts only; it is left out of drift."""

    name: str
    count: int
    missing: int
    distinct_share: float

    kind = "identifier"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._counted_dict(),
            "distinct_share": self.distinct_share,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IdentifierProfile:
        try:
            return cls(**_counted_fields(d), distinct_share=float(d["distinct_share"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed identifier profile: {exc!r}") from exc


def _integer_identifier(name: str, values: Any) -> IdentifierProfile | None:
    """An integer column that is an identifier: >= 99% distinct, and named like one or a dense
    run of numbers (an auto-increment key). A near-unique integer measure (amounts in cents)
    stays numeric unless its name says otherwise."""
    f, missing = finite_sorted(to_float_array(values, name))
    n = len(f)
    if n < MIN_IDENTIFIER_ROWS:
        return None
    share = (1 + int(np.count_nonzero(np.diff(f)))) / n
    dense = (f[-1] - f[0] + 1) <= 1.1 * n
    if share >= 0.99 and (dense or _ID_NAME.search(name)):
        return IdentifierProfile(name, n, missing, share)
    return None


def _column_profile(
    name: str, values: Any, categorical: bool, identifier: bool | None, n_bins: int
) -> ColumnProfile:
    """The profile of one column; ``identifier`` None means "detect"."""
    if identifier:  # named by the caller
        if is_datetime_column(values):
            raise InvalidInput(f"column {name!r} holds datetimes; it cannot be an identifier")
        share, present = distinct_share(values)
        return IdentifierProfile(name, present, num_rows({name: values}) - present, share)
    if categorical:
        cat = CategoricalProfile.from_values(values, name)
    elif is_datetime_column(values):
        return DatetimeProfile.from_values(values, name)
    elif is_numeric_column(values):
        if identifier is None and is_integer_column(values):
            found = _integer_identifier(name, values)
            if found is not None:
                return found
        return NumericProfile.from_values(values, name, n_bins)
    else:
        cat = CategoricalProfile.from_values(values, name)
    share = len(cat.categories) / cat.count if cat.count else 0.0
    if identifier is None and cat.count >= MIN_IDENTIFIER_ROWS and share >= 0.95:
        return IdentifierProfile(name, cat.count, cat.missing, share)
    return cat


ColumnProfile = NumericProfile | CategoricalProfile | DatetimeProfile | IdentifierProfile


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """Profiles of every monitored column of a reference dataset; JSON-safe via :meth:`to_dict`."""

    columns: Mapping[str, ColumnProfile]
    n_rows: int
    n_bins: int = DEFAULT_BINS

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))

    @classmethod
    def from_frame(
        cls,
        data: Any,
        columns: Iterable[str] | None = None,
        *,
        categorical: Iterable[str] = (),
        identifiers: Iterable[str] | None = None,
        n_bins: int = DEFAULT_BINS,
    ) -> ReferenceProfile:
        """Profile ``columns`` (default: all) of a DataFrame, pyarrow Table or mapping of columns.

        Timestamp and date columns are datetimes. Integer and float columns are numeric unless
        named in ``categorical``; every other column (strings, booleans, pandas categoricals) is
        categorical. Near-unique identifier columns are detected (see the module docs) unless
        ``identifiers`` names them (an empty list: none).
        """
        names = list(columns) if columns is not None else column_names(data)
        if not names:
            raise InvalidInput("no columns to profile")
        forced = set(categorical)
        unknown = forced - set(names)
        if unknown:
            raise InvalidInput(
                f"categorical names columns that are not profiled: {sorted(unknown)}"
            )
        ids = None if identifiers is None else set(identifiers)
        if ids is not None and ids - set(names):
            raise InvalidInput(
                f"identifiers names columns that are not profiled: {sorted(ids - set(names))}"
            )
        profiles: dict[str, ColumnProfile] = {}
        for name in names:
            values = get_column(data, name)
            is_id = None if ids is None else name in ids
            profiles[name] = _column_profile(name, values, name in forced, is_id, n_bins)
        return cls(columns=profiles, n_rows=num_rows(data), n_bins=n_bins)

    @property
    def numeric(self) -> list[str]:
        return [n for n, p in self.columns.items() if p.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [n for n, p in self.columns.items() if p.kind == "categorical"]

    @property
    def datetimes(self) -> list[str]:
        return [n for n, p in self.columns.items() if p.kind == "datetime"]

    @property
    def identifiers(self) -> list[str]:
        return [n for n, p in self.columns.items() if p.kind == "identifier"]

    def __getitem__(self, name: str) -> ColumnProfile:
        try:
            return self.columns[name]
        except KeyError:
            raise InvalidInput(f"column {name!r} is not in the reference profile") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "n_bins": self.n_bins,
            "columns": [p.to_dict() for p in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT_VERSION:
            raise InvalidInput("not a reference profile of a supported format")
        cols: dict[str, ColumnProfile] = {}
        for c in d.get("columns", []):
            kind = c.get("kind") if isinstance(c, Mapping) else None
            if kind == "numeric":
                p: ColumnProfile = NumericProfile.from_dict(c)
            elif kind == "categorical":
                p = CategoricalProfile.from_dict(c)
            elif kind == "datetime":
                p = DatetimeProfile.from_dict(c)
            elif kind == "identifier":
                p = IdentifierProfile.from_dict(c)
            else:
                raise InvalidInput(f"unknown column kind in profile: {kind!r}")
            cols[p.name] = p
        return cls(columns=cols, n_rows=int(d["n_rows"]), n_bins=int(d.get("n_bins", DEFAULT_BINS)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReferenceProfile) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
