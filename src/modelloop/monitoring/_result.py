"""Frozen, JSON-safe results of drift detection."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from modelloop.exceptions import InvalidInput

__all__ = ["ColumnDrift", "DriftResult"]


def _num(x: float | None) -> float | None:
    """JSON has no NaN or infinity: NaN becomes None, infinities become ±1e308."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return math.copysign(1e308, x)
    return x


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column.

    ``statistic`` is the method's value (KS D, total variation, PSI, normalised Wasserstein,
    chi², JS distance); tests (``ks_effect``, ``tv_effect``, ``ks``, ``chi2``) also give
    ``p_value`` and, inside a dataset run, ``adjusted_p_value`` after the multiple-testing
    correction, and are compared with ``threshold`` = alpha; scores are compared with
    ``threshold`` directly (``statistic >= threshold`` means drifted). The minimum-effect tests
    (the defaults) also give ``min_effect`` (the negligible distance) and ``ci_low``/``ci_high``,
    bounds on the true distance each holding with confidence 1 - alpha. ``error_bound`` bounds
    ``|statistic - exact value on raw data|`` for binned statistics (None when exact).
    ``statistic`` is None when either side had no usable values, or when the column is not tested
    for drift (``status`` and ``note`` then say why: a datetime column, an identifier).
    """

    column: str
    kind: str
    method: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool
    error_bound: float | None = None
    n_reference: int = 0
    n_current: int = 0
    adjusted_p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    min_effect: float | None = None
    #: "" for tested columns (the verdict is ``drifted``), else e.g. "out of range", "excluded"
    status: str = ""
    note: str = ""

    @property
    def is_test(self) -> bool:
        return self.p_value is not None

    @property
    def verdict(self) -> str:
        """``drifted``, ``no drift``, ``no data`` or the status of an untested column."""
        if self.status:
            return self.status
        if self.statistic is None:
            return "no data"
        return "drifted" if self.drifted else "no drift"

    @property
    def rule(self) -> str:
        """The decision in words: the test, its threshold and the numbers it was taken on."""
        if self.status or self.statistic is None:
            return self.note
        p = self.adjusted_p_value if self.adjusted_p_value is not None else self.p_value
        if self.min_effect is not None and self.ci_low is not None:
            level = 1 - self.threshold
            side = "above" if self.drifted else "not above"
            return (
                f"{self.method}: distance {self.statistic:.4g}, {level:.0%} lower bound "
                f"{self.ci_low:.4g} {side} the negligible effect {self.min_effect:g}"
                f" (p = {p:.3g} vs alpha {self.threshold:g})"
            )
        if p is not None:
            cmp = "<" if self.drifted else ">="
            return f"{self.method}: p = {p:.3g} {cmp} alpha {self.threshold:g}"
        cmp = ">=" if self.drifted else "<"
        return f"{self.method}: {self.statistic:.4g} {cmp} threshold {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "p_value", "threshold", "error_bound", "adjusted_p_value"):
            d[k] = _num(d[k])
        for k in ("ci_low", "ci_high", "min_effect"):
            d[k] = _num(d[k])
        d["verdict"] = self.verdict  # derived, for readers of the JSON; ignored by from_dict
        d["rule"] = self.rule
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnDrift:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as exc:
            raise InvalidInput(f"malformed column drift: {exc}") from exc


@dataclass(frozen=True)
class DriftResult:
    """Drift of a dataset: one :class:`ColumnDrift` per column and the dataset verdict.

    ``correction`` names the multiple-testing correction applied to the p-values of the columns
    tested with a test (``"benjamini-hochberg"``, ``"holm"`` or ``"none"``); score-based columns
    are not corrected. The dataset drifted when ``share_drifted >= drift_share``, where the share is
    taken over the columns that had data on both sides.
    """

    columns: tuple[ColumnDrift, ...]
    n_reference: int
    n_current: int
    alpha: float
    correction: str
    drift_share: float

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns if c.drifted)

    @property
    def n_tested(self) -> int:
        """Columns tested for drift with data on both sides (datetimes and identifiers are not)."""
        return sum(1 for c in self.columns if c.statistic is not None and not c.status)

    @property
    def notes(self) -> dict[str, str]:
        """Columns not tested for drift, each with why and what was found instead."""
        return {c.column: c.note for c in self.columns if c.status}

    @property
    def share_drifted(self) -> float:
        n = self.n_tested
        return len(self.drifted_columns) / n if n else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.n_tested > 0 and self.share_drifted >= self.drift_share

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise InvalidInput(f"column {column!r} is not in this drift result")

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "alpha": self.alpha,
            "correction": self.correction,
            "drift_share": self.drift_share,
            # derived, for readers of the JSON; ignored by from_dict
            "notes": self.notes,
            "drifted_columns": list(self.drifted_columns),
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftResult:
        try:
            return cls(
                columns=tuple(ColumnDrift.from_dict(c) for c in d["columns"]),
                n_reference=int(d["n_reference"]),
                n_current=int(d["n_current"]),
                alpha=float(d["alpha"]),
                correction=str(d["correction"]),
                drift_share=float(d["drift_share"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed drift result: {exc!r}") from exc
