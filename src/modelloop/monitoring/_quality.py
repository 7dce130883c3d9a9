"""Data quality of a current window against the reference, from the same one-pass summary.

Three checks per column: the missing rate rose by more than ``missing_jump`` (absolute), the share
of numeric values outside the reference ``[min, max]`` exceeds ``out_of_range``, the share of rows
whose category never occurred in the reference exceeds ``unseen``. Shares are over the current
non-missing values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._profile import (
    CategoricalProfile,
    DatetimeProfile,
    NumericProfile,
    ReferenceProfile,
)
from modelloop.monitoring._summary import (
    CategoricalSummary,
    DatetimeSummary,
    NumericSummary,
    as_summary,
)

__all__ = ["ColumnQuality", "QualityReport", "check_quality"]

MISSING_JUMP = "missing_rate_jump"
OUT_OF_RANGE = "out_of_range"
UNSEEN = "unseen_categories"


@dataclass(frozen=True)
class ColumnQuality:
    """Quality of one column. ``issues`` names the checks that failed (empty when all passed)."""

    column: str
    kind: str
    missing_rate_reference: float
    missing_rate_current: float
    out_of_range_share: float | None = None
    unseen_share: float | None = None
    unseen_categories: tuple[str, ...] = ()
    issues: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unseen_categories"] = list(self.unseen_categories)
        d["issues"] = list(self.issues)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnQuality:
        try:
            kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            kw["unseen_categories"] = tuple(kw.get("unseen_categories", ()))
            kw["issues"] = tuple(kw.get("issues", ()))
            return cls(**kw)
        except TypeError as exc:
            raise InvalidInput(f"malformed column quality: {exc}") from exc


@dataclass(frozen=True)
class QualityReport:
    """Quality of every column of a window and the thresholds it was checked with."""

    columns: tuple[ColumnQuality, ...]
    n_current: int
    missing_jump: float
    out_of_range: float
    unseen: float

    @property
    def breaches(self) -> tuple[tuple[str, str], ...]:
        """``(column, issue)`` for every failed check."""
        return tuple((c.column, i) for c in self.columns for i in c.issues)

    @property
    def ok(self) -> bool:
        return not self.breaches

    def __getitem__(self, column: str) -> ColumnQuality:
        for c in self.columns:
            if c.column == column:
                return c
        raise InvalidInput(f"column {column!r} is not in this quality report")

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "n_current": self.n_current,
            "missing_jump": self.missing_jump,
            "out_of_range": self.out_of_range,
            "unseen": self.unseen,
            "breaches": [list(b) for b in self.breaches],  # derived; ignored by from_dict
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityReport:
        try:
            return cls(
                columns=tuple(ColumnQuality.from_dict(c) for c in d["columns"]),
                n_current=int(d["n_current"]),
                missing_jump=float(d["missing_jump"]),
                out_of_range=float(d["out_of_range"]),
                unseen=float(d["unseen"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed quality report: {exc!r}") from exc


def check_quality(
    profile: ReferenceProfile,
    current: Any,
    *,
    columns: Iterable[str] | None = None,
    missing_jump: float = 0.05,
    out_of_range: float = 0.01,
    unseen: float = 0.01,
    max_listed: int = 10,
) -> QualityReport:
    """Check a window (table, WindowSummary or WindowAccumulator) against the reference profile."""
    names = list(columns) if columns is not None else list(profile.columns)
    summary = as_summary(profile, current, names)
    out: list[ColumnQuality] = []
    for name in names:
        ref, cur = profile[name], summary.columns[name]
        issues: list[str] = []
        if cur.missing_rate - ref.missing_rate > missing_jump:
            issues.append(MISSING_JUMP)
        oor = share = None
        listed: tuple[str, ...] = ()
        if isinstance(ref, NumericProfile) and isinstance(cur, NumericSummary):
            oor = (cur.below_count + cur.above_count) / cur.count if cur.count else 0.0
            if ref.count == 0:
                oor = 1.0 if cur.count else 0.0
            if oor > out_of_range:
                issues.append(OUT_OF_RANGE)
        elif isinstance(ref, DatetimeProfile) and isinstance(cur, DatetimeSummary):
            oor = (cur.before + cur.after) / cur.count if cur.count else 0.0
            if oor > out_of_range:
                issues.append(OUT_OF_RANGE)
        elif isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalSummary):
            new = {k: v for k, v in cur.categories.items() if k not in ref.categories}
            share = sum(new.values()) / cur.count if cur.count else 0.0
            listed = tuple(sorted(new, key=lambda k: (-new[k], k))[:max_listed])
            if share > unseen:
                issues.append(UNSEEN)
        out.append(
            ColumnQuality(
                column=name,
                kind=ref.kind,
                missing_rate_reference=ref.missing_rate,
                missing_rate_current=cur.missing_rate,
                out_of_range_share=oor,
                unseen_share=share,
                unseen_categories=listed,
                issues=tuple(issues),
            )
        )
    return QualityReport(tuple(out), summary.n_rows, missing_jump, out_of_range, unseen)
