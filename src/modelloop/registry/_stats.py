"""Confidence intervals for the difference of a metric between two models scored on the same
rows.

AUC (binary): DeLong's method, the variance of the paired difference from the structural
components of each AUC (midranks, ties counted half), so no resampling is needed. Every other
metric: a paired bootstrap — the same resampled rows score both models, and the interval is the
2.5th and 97.5th percentiles of the differences. The bootstrap works on per-row terms
(correct or not, log loss, squared error, ...) gathered in blocks, so 1,000 resamples of tens of
thousands of rows take well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HIGHER_IS_BETTER", "Interval", "delong_auc_difference", "paired_bootstrap"]

#: The direction of the metrics evaluation reports (True: higher is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "auc": True,
    "accuracy": True,
    "f1": True,
    "precision": True,
    "recall": True,
    "r2": True,
    "log_loss": False,
    "brier": False,
    "rmse": False,
    "mae": False,
    "segment_gap": False,
    "p95_latency_ms": False,
    "demographic_parity_difference": False,
    "equalized_odds_difference": False,
    "accuracy_difference": False,
    "mae_difference": False,
}


@dataclass(frozen=True)
class Interval:
    """A 95% confidence interval of ``b - a`` and the method that gave it."""

    low: float
    high: float
    method: str


def _midranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.asarray(rankdata(x, method="average"), dtype="float64")


def delong_auc_difference(
    positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, level: float = 0.95
) -> tuple[float, Interval] | None:
    """(AUC_b - AUC_a, its interval) by DeLong's paired method; None without both classes."""
    from scipy.stats import norm

    pos = np.asarray(positive, dtype=bool)
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        return None
    v10, v01, aucs = [], [], []
    for s in (np.asarray(score_a, "float64"), np.asarray(score_b, "float64")):
        x, y = s[pos], s[~pos]
        whole = _midranks(np.concatenate([x, y]))
        rx, ry = _midranks(x), _midranks(y)
        # the share of negatives each positive outranks, and of positives each negative trails
        comp10 = (whole[:m] - rx) / n
        comp01 = 1.0 - (whole[m:] - ry) / m
        v10.append(comp10)
        v01.append(comp01)
        aucs.append(float(comp10.mean()))
    s10 = np.cov(np.vstack(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack(v01)) if n > 1 else np.zeros((2, 2))
    contrast = np.array([-1.0, 1.0])
    var = float(contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n)
    delta = aucs[1] - aucs[0]
    z = float(norm.ppf(0.5 + level / 2))
    half = z * math.sqrt(max(var, 0.0))
    return delta, Interval(delta - half, delta + half, "DeLong")


# -- the paired bootstrap ------------------------------------------------------------------------

#: A metric from per-row terms: given the terms gathered at resampled rows (resamples, rows),
#: its value per resample.
_Stat = Callable[[dict[str, np.ndarray]], np.ndarray]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _terms(
    kind: str,
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: Sequence[Any],
) -> tuple[dict[str, np.ndarray], dict[str, _Stat]]:
    """The per-row terms of a model's predictions and the metrics built from them."""
    terms: dict[str, np.ndarray] = {}
    stats: dict[str, _Stat] = {}
    if kind == "regression":
        err = pred.astype("float64") - y.astype("float64")
        terms |= {"se": err**2, "ae": np.abs(err), "y": y.astype("float64")}
        terms["y2"] = terms["y"] ** 2
        stats["rmse"] = lambda t: np.sqrt(t["se"].mean(axis=1))
        stats["mae"] = lambda t: t["ae"].mean(axis=1)

        def r2(t: dict[str, np.ndarray]) -> np.ndarray:
            sst = t["y2"].sum(axis=1) - t["y"].sum(axis=1) ** 2 / t["y"].shape[1]
            return 1.0 - _ratio(t["se"].sum(axis=1), sst)

        stats["r2"] = r2
        return terms, stats
    terms["correct"] = (pred == y).astype("float64")
    stats["accuracy"] = lambda t: t["correct"].mean(axis=1)
    if kind == "binary":
        positive = classes[1]
        terms["tp"] = ((pred == positive) & (y == positive)).astype("float64")
        terms["pp"] = (pred == positive).astype("float64")
        terms["ap"] = (y == positive).astype("float64")
        stats["precision"] = lambda t: _ratio(t["tp"].sum(axis=1), t["pp"].sum(axis=1))
        stats["recall"] = lambda t: _ratio(t["tp"].sum(axis=1), t["ap"].sum(axis=1))
        stats["f1"] = lambda t: _ratio(
            2 * t["tp"].sum(axis=1), t["pp"].sum(axis=1) + t["ap"].sum(axis=1)
        )
    if proba is not None:
        p = np.asarray(proba, dtype="float64")
        p = p / p.sum(axis=1, keepdims=True)  # as scikit-learn's log_loss normalises rows
        index = {c: i for i, c in enumerate(classes)}
        true_col = np.array([index.get(v, -1) for v in y])
        known = true_col >= 0
        eps = np.finfo(p.dtype).eps
        p_true = np.where(known, p[np.arange(len(y)), np.where(known, true_col, 0)], eps)
        terms["nll"] = -np.log(np.clip(p_true, eps, 1.0))
        stats["log_loss"] = lambda t: t["nll"].mean(axis=1)
        if kind == "binary":
            terms["sq"] = (p[:, 1] - (y == classes[1])) ** 2
            stats["brier"] = lambda t: t["sq"].mean(axis=1)
    return terms, stats


def paired_bootstrap(
    kind: str,
    y: np.ndarray,
    a: tuple[np.ndarray, np.ndarray | None],
    b: tuple[np.ndarray, np.ndarray | None],
    classes: Sequence[Any],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_rows: int = 200_000,
) -> dict[str, tuple[float, Interval]]:
    """``{metric: (b - a on every row, interval)}`` for the metrics a paired bootstrap covers on
    this ``kind`` (``binary``, ``multiclass`` or ``regression``); ``a`` and ``b`` are each
    model's (predictions, probabilities or None). More than ``max_rows`` rows are resampled
    through a subset of that many (the method says so)."""
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        return {}
    terms_a, stats_a = _terms(kind, y, np.asarray(a[0]), a[1], classes)
    terms_b, stats_b = _terms(kind, y, np.asarray(b[0]), b[1], classes)
    names = [k for k in stats_a if k in stats_b]
    whole = np.arange(n)[None, :]
    point = {
        k: float(
            stats_b[k]({t: v[whole] for t, v in terms_b.items()})[0]
            - stats_a[k]({t: v[whole] for t, v in terms_a.items()})[0]
        )
        for k in names
    }
    rng = np.random.default_rng(seed)
    # Past max_rows, the resamples are drawn from a random subset and their spread around the
    # subset's own difference is narrowed by sqrt(m / n): the spread of a mean-like statistic
    # shrinks as one over the square root of the rows.
    m, method, scale = n, "paired bootstrap", 1.0
    sub = np.arange(n)
    if n > max_rows:
        m, scale = max_rows, math.sqrt(max_rows / n)
        sub = np.sort(rng.choice(n, size=m, replace=False))
        method = f"paired bootstrap ({m:,}-row subsample, scaled)"
    centre = {
        k: float(
            stats_b[k]({t: v[sub][None, :] for t, v in terms_b.items()})[0]
            - stats_a[k]({t: v[sub][None, :] for t, v in terms_a.items()})[0]
        )
        for k in names
    }
    block = max(1, min(resamples, 500_000 // m))  # bounded memory per block
    deltas: dict[str, list[np.ndarray]] = {k: [] for k in names}
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        idx = sub[rng.integers(0, m, size=(size, m))]
        ga = {t: v[idx] for t, v in terms_a.items()}
        gb = {t: v[idx] for t, v in terms_b.items()}
        for k in names:
            deltas[k].append(stats_b[k](gb) - stats_a[k](ga))
        done += size
    tail = (1 - level) / 2 * 100
    out = {}
    for k in names:
        d = np.concatenate(deltas[k])
        low, high = np.percentile(d, [tail, 100 - tail])
        low = point[k] + (float(low) - centre[k]) * scale
        high = point[k] + (float(high) - centre[k]) * scale
        out[k] = (point[k], Interval(low, high, method))
    return out
