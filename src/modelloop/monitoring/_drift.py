"""Dataset-level drift: one detector per column, a multiple-testing correction, a verdict.

**Defaults: one rule for every window size.** ``numeric_method="auto"`` and
``categorical_method="auto"`` judge every column with a minimum-effect test: the column drifted
when, with confidence ``1 - alpha``, its distance from the reference exceeds a negligible effect
``min_effect`` (default 0.02). The distance is the Kolmogorov-Smirnov distance for numeric columns
(:class:`~modelloop.monitoring.KSEffectDetector`, interval from the Dvoretzky-Kiefer-Wolfowitz
inequality) and the total variation distance for categorical ones
(:class:`~modelloop.monitoring.TVEffectDetector`); both read as "the share of the probability mass
that moved", and 0.02 is what a mean shift of 0.05 reference sd gives on a normal column.

Why: a plain test at large n flags shifts far too small to matter (with 1M rows on each side, KS at
alpha 0.05 rejects a mean shift of 0.005 sd), and a plain score at small n flags its own sampling
noise. The interval covers both: it is wide at small n (only clear shifts are flagged, false alarms
stay below alpha) and narrow at large n (the verdict converges to "distance > min_effect"), and the
detection rate grows smoothly with the window size: no method switches at some n, so a window that
hovers around a size never flips between rules. Measured detection rate of a mean shift of a
normal column against a 100k-row reference, alpha 0.05, min_effect 0.02 (``benchmarks/drift.py``;
shift 0 is the null false-alarm rate)::

    rows        0 sd  0.02  0.05  0.08  0.10  0.15  0.20
    500         0.00  0.00  0.01  0.04  0.08  0.28  0.64
    1,000       0.00  0.00  0.00  0.03  0.09  0.50  0.91
    2,000       0.00  0.00  0.01  0.04  0.15  0.79  1.00
    5,000       0.00  0.00  0.00  0.04  0.39  1.00  1.00
    10,000      0.00  0.00  0.00  0.15  0.79  1.00  1.00
    100,000     0.00  0.00  0.00  0.97  1.00  1.00  1.00
    1,000,000   0.00  0.00  0.00  1.00  1.00  1.00  1.00

The interval holds for any distribution, so it is conservative: no false alarm in these runs, and
in small windows only shifts of about 0.15 sd (1,000 rows) are found half the time.

**Correction.** The p-values of the columns judged by a test are corrected together with
Benjamini-Hochberg by default (``correction="holm"`` for Holm's family-wise control, ``"none"`` to
switch it off); a column is drifted when its adjusted p-value is below ``alpha``. The
minimum-effect p-values are valid for "distance <= min_effect", so under no drift at all
Benjamini-Hochberg keeps the chance of flagging any column at most ``alpha``.

**Columns not tested.** Datetime columns are profiled by range (see :mod:`._profile`) and reported
with the share of the window outside the reference range, never as "no drift" of their values;
near-unique identifier columns are left out with a note. Neither counts in the drift share.

**Verdict.** The dataset drifted when the share of drifted columns is at least ``drift_share``
(default 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._detectors import MIN_EFFECT, _Detector, make_detector
from modelloop.monitoring._profile import (
    DEFAULT_BINS,
    DatetimeProfile,
    IdentifierProfile,
    ReferenceProfile,
    iso_ns,
)
from modelloop.monitoring._result import ColumnDrift, DriftResult
from modelloop.monitoring._summary import (
    DatetimeSummary,
    IdentifierSummary,
    WindowAccumulator,
    WindowSummary,
    as_summary,
)

__all__ = ["CORRECTIONS", "DriftMonitor", "adjust_p_values", "detect_drift", "prediction_frame"]

CORRECTIONS = {"bh": "benjamini-hochberg", "holm": "holm", "none": "none"}
_AUTO = {"numeric": "ks_effect", "categorical": "tv_effect"}


def adjust_p_values(p: Iterable[float], correction: str = "bh") -> np.ndarray:
    """Adjusted p-values: ``"bh"`` (Benjamini-Hochberg), ``"holm"`` or ``"none"``."""
    p = np.asarray(list(p), dtype=np.float64)
    m = len(p)
    if m == 0 or correction == "none":
        return p
    order = np.argsort(p)
    ranked = p[order]
    if correction == "bh":
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    elif correction == "holm":
        adj = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        raise InvalidInput(f"unknown correction {correction!r}; choose from {sorted(CORRECTIONS)}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


class DriftMonitor:
    """Drift of a dataset against a reference, estimator-style.

    ``fit(reference)`` takes a :class:`ReferenceProfile` (or a table, profiled once);
    ``test(current)`` takes a table, a :class:`WindowSummary` or a :class:`WindowAccumulator` and
    returns a :class:`DriftResult`. ``numeric_method`` and ``categorical_method`` name the
    method for each kind of column (``"auto"``: the minimum-effect tests of the module docs, with
    ``alpha`` and ``min_effect``); ``methods`` overrides it per column with a name (``ks_effect``,
    ``tv_effect``, ``ks``, ``wasserstein``, ``psi``, ``chi2``, ``jensenshannon``) or an unfitted
    detector.
    """

    def __init__(
        self,
        columns: Iterable[str] | None = None,
        *,
        numeric_method: str = "auto",
        categorical_method: str = "auto",
        methods: Mapping[str, str | _Detector] | None = None,
        alpha: float = 0.05,
        correction: str = "bh",
        drift_share: float = 0.5,
        min_effect: float = MIN_EFFECT,
        categorical: Iterable[str] = (),  # columns to profile as categorical (when fitting a table)
        profile_bins: int = DEFAULT_BINS,
    ) -> None:
        self.columns = columns
        self.numeric_method = numeric_method
        self.categorical_method = categorical_method
        self.methods = methods
        self.alpha = alpha
        self.correction = correction
        self.drift_share = drift_share
        self.min_effect = min_effect
        self.categorical = categorical
        self.profile_bins = profile_bins

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        names = (
            *("columns", "numeric_method", "categorical_method", "methods", "alpha", "correction"),
            "drift_share",
            *("min_effect", "categorical", "profile_bins"),
        )
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params: Any) -> DriftMonitor:
        for k, v in params.items():
            if k not in self.get_params():
                raise InvalidInput(f"DriftMonitor has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def fit(self, reference: Any, y: Any = None) -> DriftMonitor:
        """Take the reference profile, or profile a reference table once."""
        if self.correction not in CORRECTIONS:
            raise InvalidInput(
                f"unknown correction {self.correction!r}; choose from {sorted(CORRECTIONS)}"
            )
        if not 0 < self.alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.min_effect < 1:
            raise InvalidInput(f"min_effect must be in [0, 1), got {self.min_effect}")
        if isinstance(reference, ReferenceProfile):
            profile = reference
        else:
            profile = ReferenceProfile.from_frame(
                reference, self.columns, categorical=self.categorical, n_bins=self.profile_bins
            )
        cols = list(self.columns) if self.columns is not None else list(profile.columns)
        for c in cols:
            profile[c]
        for c in self.methods or {}:
            if c not in cols:
                raise InvalidInput(f"methods names column {c!r}, which is not monitored")
            if profile[c].kind in ("datetime", "identifier"):
                raise InvalidInput(
                    f"methods names column {c!r}, a {profile[c].kind} column, which is not "
                    "tested for drift"
                )
        self.profile_ = profile
        self.columns_ = cols
        return self

    def accumulator(self) -> WindowAccumulator:
        """A streaming accumulator for a window; pass it (or its summary) to :meth:`test`."""
        return WindowAccumulator(self._fitted(), self.columns_)

    def _fitted(self) -> ReferenceProfile:
        profile = getattr(self, "profile_", None)
        if profile is None:
            raise InvalidInput("DriftMonitor is not fitted; call fit(reference) first")
        return profile

    def _detector(self, column: str) -> _Detector:
        profile = self._fitted()
        ref = profile[column]
        default = self.numeric_method if ref.kind == "numeric" else self.categorical_method
        spec = (self.methods or {}).get(column, default)
        if isinstance(spec, _Detector):
            det = type(spec)(**spec.get_params())
        else:
            name = _AUTO[ref.kind] if spec == "auto" else spec
            det = make_detector(
                name, alpha=self.alpha, min_effect=self.min_effect, profile_bins=self.profile_bins
            )
        if det.kind != ref.kind:
            raise InvalidInput(
                f"method {det.method!r} does not apply to {ref.kind} column {column!r}"
            )
        return det.fit(ref)

    def test(self, current: Any) -> DriftResult:
        """Drift of ``current`` (a table, WindowSummary or WindowAccumulator) vs the reference."""
        profile = self._fitted()
        summary: WindowSummary = as_summary(profile, current, self.columns_)
        results: list[ColumnDrift] = []
        for name in self.columns_:
            col, ref = summary.columns[name], profile[name]
            if isinstance(ref, DatetimeProfile) and isinstance(col, DatetimeSummary):
                results.append(datetime_range(ref, col))
            elif isinstance(ref, IdentifierProfile) and isinstance(col, IdentifierSummary):
                results.append(identifier_note(ref, col))
            else:
                results.append(self._detector(name).test(col))
        tested = [i for i, r in enumerate(results) if r.p_value is not None]
        adjusted = adjust_p_values([results[i].p_value or 0.0 for i in tested], self.correction)
        for i, adj in zip(tested, adjusted, strict=True):
            r = results[i]
            results[i] = replace(r, adjusted_p_value=float(adj), drifted=bool(adj < r.threshold))
        return DriftResult(
            columns=tuple(results),
            n_reference=profile.n_rows,
            n_current=summary.n_rows,
            alpha=self.alpha,
            correction=CORRECTIONS[self.correction],
            drift_share=self.drift_share,
        )


DAY_NS = 86_400 * 10**9


def datetime_range(ref: DatetimeProfile, cur: DatetimeSummary) -> ColumnDrift:
    """A datetime column judged by range and recency: the share of the window outside the
    reference's range (statistic), and a note with the ranges and how far the newest value lies
    past the reference's newest. Status: ``in range``, ``partly out of range``, ``out of range``.
    Not a drift test: time moves on, so new timestamps are expected to differ."""

    def result(share: float | None, status: str, note: str) -> ColumnDrift:
        return _not_tested(ref, cur, "datetime", "range", share, status, note)

    if ref.count == 0 or cur.count == 0 or ref.max is None or cur.max is None:
        return result(None, "no data", "no datetimes on one side: range not checked")
    outside = cur.before + cur.after
    share = outside / cur.count
    if outside == 0:
        status = "in range"
    elif outside == cur.count:
        status = "out of range"
    else:
        status = "partly out of range"
    lag = (cur.max - ref.max) / DAY_NS
    note = (
        f"{status}: {share:.1%} of {cur.count:,} timestamps outside the reference's range "
        f"({cur.before:,} before, {cur.after:,} after); reference {iso_ns(ref.min)} .. "
        f"{iso_ns(ref.max)}, window {iso_ns(cur.min)} .. {iso_ns(cur.max)}; newest "
        f"{abs(lag):.1f} days {'after' if lag >= 0 else 'before'} the reference's newest. "
        "Datetimes are judged by range and recency, not tested for drift of their values."
    )
    return result(share, status, note)


def identifier_note(ref: IdentifierProfile, cur: IdentifierSummary) -> ColumnDrift:
    """An identifier column: left out of drift, with a note saying why."""
    note = (
        f"excluded: a near-unique identifier ({ref.distinct_share:.1%} distinct values in the "
        "reference); identifiers have no distribution to drift"
    )
    return _not_tested(ref, cur, "identifier", "excluded", None, "excluded", note)


def _not_tested(
    ref: DatetimeProfile | IdentifierProfile,
    cur: DatetimeSummary | IdentifierSummary,
    kind: str,
    method: str,
    statistic: float | None,
    status: str,
    note: str,
) -> ColumnDrift:
    """The result for a column judged without a drift test: no p-value, never drifted."""
    return ColumnDrift(
        column=ref.name or cur.name,
        kind=kind,
        method=method,
        statistic=statistic,
        p_value=None,
        threshold=0.0,
        drifted=False,
        n_reference=ref.count,
        n_current=cur.count,
        status=status,
        note=note,
    )


def detect_drift(reference: ReferenceProfile | Any, current: Any, **settings: Any) -> DriftResult:
    """One-call form: ``DriftMonitor(**settings).fit(reference).test(current)``."""
    return DriftMonitor(**settings).fit(reference).test(current)


def prediction_frame(
    predictions: Any,
    probabilities: Any = None,
    *,
    classes: Iterable[Any] | None = None,
    task: str = "classification",
) -> Any:
    """Model outputs as a table for prediction drift: ``prediction`` plus ``proba_<class>`` columns.

    Classification labels become strings so they are treated as categories; probabilities may be a
    2-d array or a column of lists. Profile a reference frame and test a current one with
    :class:`DriftMonitor`, exactly as for input features.
    """
    import pandas as pd

    if task not in ("classification", "regression"):
        raise InvalidInput(f"task must be 'classification' or 'regression', got {task!r}")
    pred = pd.Series(np.asarray(predictions)).reset_index(drop=True)
    if pred.ndim != 1:
        raise InvalidInput("predictions must be one-dimensional")
    frame = pd.DataFrame(
        {"prediction": pred.astype("string") if task == "classification" else pred}
    )
    if probabilities is not None:
        if isinstance(probabilities, pd.Series) or (
            isinstance(probabilities, list) and probabilities and isinstance(probabilities[0], list)
        ):
            proba = np.asarray(list(probabilities), dtype=np.float64)
        else:
            proba = np.asarray(probabilities, dtype=np.float64)
        if proba.ndim == 1:
            proba = proba[:, None]
        if proba.shape[0] != len(frame):
            raise InvalidInput(
                f"{proba.shape[0]} rows of probabilities for {len(frame)} predictions"
            )
        labels = list(classes) if classes is not None else list(range(proba.shape[1]))
        if len(labels) != proba.shape[1]:
            raise InvalidInput(f"{len(labels)} classes for {proba.shape[1]} probability columns")
        for j, c in enumerate(labels):
            frame[f"proba_{c}"] = proba[:, j]
    return frame
