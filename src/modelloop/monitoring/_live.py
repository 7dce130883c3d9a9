"""Live metrics accumulated batch by batch, so labelled windows of any size stay in bounded memory.

Per group (overall, per segment, per model version, per time bucket and version) it keeps counts,
not rows: for classification the per-class true/false positives and negatives (accuracy and F1
are then exact) and, for binary models, a :class:`~modelloop.monitoring._auc.ScoreSketch` of the
positive-class score per true class: exact while a group has at most 8,192 distinct scores, then
intervals that adapt to where the scores are, with a stated error
(:meth:`LiveMetricsAccumulator.auc_error_bound`). For regression it keeps sums of absolute and
squared errors (MAE and RMSE are exact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._auc import ScoreSketch
from modelloop.monitoring._performance import (
    CLASSIFICATION,
    REGRESSION,
    WINDOW,
    MetricRow,
    PerformanceReport,
    SegmentGap,
    _class_key,
)

__all__ = ["LiveMetricsAccumulator"]

_VERSION = "model_version"


@dataclass
class _Counts:
    n: int = 0
    tp: np.ndarray | None = None  # per class
    fp: np.ndarray | None = None
    fn: np.ndarray | None = None
    correct: int = 0
    scores: ScoreSketch | None = None
    abs_err: float = 0.0
    sq_err: float = 0.0


class LiveMetricsAccumulator:
    """Accumulate labelled predictions (pyarrow record batches or DataFrames) into live metrics.

    Batches carry ``label``, ``prediction`` and, as available, ``score`` (the positive-class
    probability), ``model_version``, ``timestamp`` and the ``segment`` column. ``classes`` are the
    model's classes (the last is the positive one of a binary model); labels and predictions are
    compared as the text of their values.
    """

    def __init__(
        self,
        *,
        task: str,
        classes: Sequence[Any] | None = None,
        segment: str | None = None,
        freq: str = "1h",
    ) -> None:
        if task not in ("classification", "regression"):
            raise InvalidInput(f"task must be 'classification' or 'regression', got {task!r}")
        if task == "classification" and not classes:
            raise InvalidInput("streamed classification metrics need the model's classes")
        self.task = task
        self.names = [_class_key(c) for c in classes or ()]
        self.index = {k: i for i, k in enumerate(self.names)}
        self.unknown: list[str] = []  # values seen that are none of the classes
        self.segment = segment
        self.freq = freq
        self.groups: dict[tuple[tuple[str, str], ...], _Counts] = {}

    @property
    def binary(self) -> bool:
        return self.task == "classification" and len(self.names) <= 2

    def update(self, batch: Any) -> LiveMetricsAccumulator:
        """Add one batch of labelled predictions."""
        import pandas as pd

        frame = batch if isinstance(batch, pd.DataFrame) else batch.to_pandas()
        frame = frame.dropna(subset=["label", "prediction"])
        if frame.empty:
            return self
        keys = pd.DataFrame(index=frame.index)
        if self.segment:
            keys["segment"] = frame[self.segment].astype("string").fillna("<missing>")
        if _VERSION in frame.columns:
            keys[_VERSION] = frame[_VERSION].astype("string")
        if "timestamp" in frame.columns:
            ts = pd.to_datetime(frame["timestamp"], utc=True).dt.floor(self.freq)
            keys[WINDOW] = _iso(ts)
        sets: list[list[str]] = [[]]
        if self.segment:
            sets.append(["segment"])
        if _VERSION in keys:
            sets.append([_VERSION])
        if WINDOW in keys:
            sets.append([WINDOW, *([_VERSION] if _VERSION in keys else [])])
        data = self._values(frame)
        for names in sets:
            if not names:
                self._add((), data, np.ones(len(frame), dtype=bool))
                continue
            codes, uniques = pd.MultiIndex.from_frame(keys[names]).factorize()
            for g, values in enumerate(uniques):
                label = tuple(zip(names, (str(v) for v in values), strict=True))
                self._add(label, data, codes == g)
        return self

    def _values(self, frame: Any) -> dict[str, np.ndarray]:
        if self.task == "regression":
            y = frame["label"].to_numpy(dtype=np.float64)
            p = frame["prediction"].to_numpy(dtype=np.float64)
            return {"err": p - y}
        y, p = self._code(frame["label"]), self._code(frame["prediction"])
        out = {"y": y, "p": p}
        if self.binary and "score" in frame.columns:
            s = frame["score"].to_numpy(dtype=np.float64, na_value=np.nan)
            finite = np.isfinite(s)  # rows without a score stay out of the AUC only
            if ((s[finite] < 0) | (s[finite] > 1)).any():
                raise InvalidInput("the score column must hold probabilities in [0, 1]")
            out["score"] = s
            out["scored"] = finite
        return out

    def _code(self, values: Any) -> np.ndarray:
        """Class indices; a value that is no class gets its own code (>= number of classes), so
        two different unknown values never count as a match. Missing values are -1."""
        import pandas as pd

        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        lookup = []
        for u in uniques:
            key = _class_key(u)
            if key not in self.index:
                self.index[key] = len(self.index)
                self.unknown.append(key)
            lookup.append(self.index[key])
        return np.array([*lookup, -1], dtype=np.int64)[codes]

    def _add(self, key: tuple[tuple[str, str], ...], data: dict[str, np.ndarray], m: Any) -> None:
        c = self.groups.setdefault(key, _Counts())
        c.n += int(m.sum())
        if self.task == "regression":
            err = data["err"][m]
            c.abs_err += float(np.abs(err).sum())
            c.sq_err += float(np.square(err).sum())
            return
        k = len(self.names)
        y, p = data["y"][m], data["p"][m]
        hit = y == p
        c.correct += int(hit.sum())
        y_known, p_known = (y >= 0) & (y < k), (p >= 0) & (p < k)
        tp = np.bincount(y[hit & y_known], minlength=k)
        fp = np.bincount(p[~hit & p_known], minlength=k)
        fn = np.bincount(y[~hit & y_known], minlength=k)
        c.tp = tp if c.tp is None else c.tp + tp
        c.fp = fp if c.fp is None else c.fp + fp
        c.fn = fn if c.fn is None else c.fn + fn
        if "score" in data:
            keep = data["scored"][m] & y_known
            if c.scores is None:
                c.scores = ScoreSketch()
            c.scores.update(data["score"][m][keep], y[keep] == k - 1)

    def _metrics(self, c: _Counts) -> dict[str, float | None]:
        if self.task == "regression":
            return {"mae": c.abs_err / c.n, "rmse": math.sqrt(c.sq_err / c.n)}
        assert c.tp is not None and c.fp is not None and c.fn is not None
        denom = 2 * c.tp + c.fp + c.fn
        f1s = np.divide(2 * c.tp, denom, out=np.zeros(len(denom)), where=denom > 0)
        f1 = float(f1s[-1]) if self.binary else float(f1s.mean())
        auc = c.scores.auc() if c.scores is not None else None
        return {"accuracy": c.correct / c.n, "f1": f1, "auc": auc}

    def auc_error_bound(self, **group: str) -> float | None:
        """The most the streamed AUC of ``group`` (overall when empty, else e.g.
        ``model_version="2"``) can differ from the exact AUC of its rows; None without scores."""
        key = tuple(sorted(group.items()))
        for k, c in self.groups.items():
            if tuple(sorted(k)) == key:
                return None if c.scores is None else c.scores.error_bound()
        raise InvalidInput(f"no group {group} in these live metrics")

    @property
    def empty(self) -> bool:
        """Whether no labelled prediction has been added."""
        return () not in self.groups or self.groups[()].n == 0

    def report(self, *, min_segment_rows: int = 1) -> PerformanceReport:
        """Metrics overall and per group, with gaps between segments of enough rows."""
        if self.empty:
            raise InvalidInput("no labelled predictions to evaluate")
        overall = MetricRow({}, self.groups[()].n, self._metrics(self.groups[()]))
        seg = self.segment or "segment"
        rows = []
        seg_rows = []
        for key in sorted(k for k in self.groups if k):
            group = {(seg if n == "segment" else n): v for n, v in key}
            row = MetricRow(group, self.groups[key].n, self._metrics(self.groups[key]))
            rows.append(row)
            if len(key) == 1 and key[0][0] == "segment":
                seg_rows.append(row)
        gaps = []
        for name in CLASSIFICATION if self.task == "classification" else REGRESSION:
            vals = [
                (v, r.group[seg])
                for r in seg_rows
                if r.n >= min_segment_rows and (v := r.metrics.get(name)) is not None
            ]
            if len(vals) >= 2:
                hi, lo = max(vals), min(vals)
                gaps.append(SegmentGap({}, name, hi[0], lo[0], hi[1], lo[1]))
        keys = [k for k in (WINDOW, _VERSION) if any(k in r.group for r in rows)]
        keys += [self.segment] if self.segment else []
        return PerformanceReport(self.task, overall, tuple(rows), tuple(gaps), tuple(keys))


def _iso(ts: Any) -> Any:
    """ISO 8601 text of floored timestamps, formatted once per distinct bucket."""
    import pandas as pd

    codes, uniques = pd.factorize(ts)
    text = np.array([t.isoformat() for t in uniques] + [""], dtype=object)
    return text[codes]
