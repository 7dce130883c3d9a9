"""Live performance: feedback labels joined to predictions, metrics per window, version, segment.

Metrics are scikit-learn's, computed per group (the same numbers as calling scikit-learn on that
group's rows). Classification: ``accuracy``, ``f1`` (binary for the positive class, macro-averaged
over all classes when there are more than two) and ``auc`` (binary, needs a score column; None when
a group has one class only). The classes, the positive class and the kind of F1 are decided once
for the whole frame, so that every group is measured the same way. Regression: ``mae`` and
``rmse``. With a ``segment`` column, each metric's spread across segments is reported as a gap
(max - min) per group of the other keys, as fairlearn's ``MetricFrame.difference()`` would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput, SchemaMismatch

__all__ = ["MetricRow", "PerformanceReport", "SegmentGap", "join_labels", "live_performance"]

CLASSIFICATION = ("accuracy", "f1", "auc")
REGRESSION = ("mae", "rmse")
WINDOW = "window"
_Y, _PRED = "__modelloop_label", "__modelloop_prediction"


def _clean(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class MetricRow:
    """Metrics of one group; ``group`` maps each key (window, version, segment) to its value."""

    group: Mapping[str, str]
    n: int
    metrics: Mapping[str, float | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", MappingProxyType(dict(self.group)))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def to_dict(self) -> dict[str, Any]:
        return {"group": dict(self.group), "n": self.n, "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricRow:
        return cls(dict(d["group"]), int(d["n"]), dict(d["metrics"]))


@dataclass(frozen=True)
class SegmentGap:
    """Spread of one metric across the segments of one group."""

    group: Mapping[str, str]
    metric: str
    max: float
    min: float
    max_segment: str
    min_segment: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", MappingProxyType(dict(self.group)))

    @property
    def gap(self) -> float:
        return self.max - self.min

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": dict(self.group),
            "metric": self.metric,
            "max": self.max,
            "min": self.min,
            "max_segment": self.max_segment,
            "min_segment": self.min_segment,
            "gap": self.gap,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmentGap:
        kw = {k: d[k] for k in ("metric", "max", "min", "max_segment", "min_segment")}
        return cls(group=dict(d["group"]), **kw)


@dataclass(frozen=True)
class PerformanceReport:
    """Overall metrics, metrics per group and the gaps between segments."""

    task: str
    overall: MetricRow
    rows: tuple[MetricRow, ...] = ()
    gaps: tuple[SegmentGap, ...] = ()
    keys: tuple[str, ...] = field(default=())

    def metric(self, name: str, **group: str) -> float | None:
        """The metric of the row whose group matches exactly ``group`` (overall if empty)."""
        if not group:
            return self.overall.metrics.get(name)
        for r in self.rows:
            if dict(r.group) == group:
                return r.metrics.get(name)
        raise InvalidInput(f"no group {group} in this performance report")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "keys": list(self.keys),
            "overall": self.overall.to_dict(),
            "rows": [r.to_dict() for r in self.rows],
            "gaps": [g.to_dict() for g in self.gaps],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PerformanceReport:
        try:
            return cls(
                task=d["task"],
                overall=MetricRow.from_dict(d["overall"]),
                rows=tuple(MetricRow.from_dict(r) for r in d["rows"]),
                gaps=tuple(SegmentGap.from_dict(g) for g in d["gaps"]),
                keys=tuple(d.get("keys", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed performance report: {exc!r}") from exc


def join_labels(
    predictions: Any,
    labels: Any,
    *,
    on: str = "request_id",
    label: str = "label",
    order_by: str | None = "timestamp",
) -> Any:
    """Predictions that have feedback, with their ``label`` column (inner join on ``on``).

    When a request has several labels the last one wins (feedback may be corrected): the latest
    by the labels' ``order_by`` column when they have it (labels without a value count as the
    oldest, equal values keep row order), else the last in row order.
    """
    import pandas as pd

    preds = predictions if isinstance(predictions, pd.DataFrame) else pd.DataFrame(predictions)
    labs = labels if isinstance(labels, pd.DataFrame) else pd.DataFrame(labels)
    for name, frame, cols in (("predictions", preds, [on]), ("labels", labs, [on, label])):
        for c in cols:
            if c not in frame.columns:
                raise SchemaMismatch(f"{name} have no column {c!r}", column=c)
    if order_by is not None and order_by in labs.columns:
        try:
            labs = labs.sort_values(order_by, kind="stable", na_position="first")
        except TypeError as exc:
            raise InvalidInput(f"labels cannot be ordered by {order_by!r}: {exc}") from exc
    labs = labs[[on, label]].drop_duplicates(on, keep="last")
    if label in preds.columns:
        preds = preds.drop(columns=[label])
    return preds.merge(labs, on=on, how="inner", validate="many_to_one")


def _group_value(v: Any) -> str:
    """A group key as text; time buckets in ISO 8601."""
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def _class_key(v: Any) -> str:
    """A class value as text, the same for ``1``, ``"1"``, ``np.int64(1)`` and ``1.0``."""
    if isinstance(v, float) and v.is_integer():  # int labels become float next to a NaN
        v = int(v)
    elif hasattr(v, "item") and not isinstance(v, str):  # a numpy scalar
        return _class_key(v.item())
    return str(v)


@dataclass(frozen=True)
class _Classes:
    """How a classification frame is scored, decided once for all of its groups. Labels and
    predictions are encoded as indices into ``names`` (-1 for a value that is no class)."""

    names: list[Any]
    binary: bool
    positive: int  # index of the positive class when binary (-1: none)


def _encode(values: Any, index: dict[Any, int], key: Any) -> np.ndarray:
    """Values as class indices; the key function runs once per distinct value, not per row."""
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = np.array([index.get(key(u), -1) for u in uniques] + [-1], dtype=np.int64)
    return lookup[codes]  # the NA sentinel -1 picks the trailing -1


def _classes(
    y: Any, pred: Any, classes: Sequence[Any] | None, pos_label: Any
) -> tuple[_Classes, np.ndarray, np.ndarray]:
    """The scoring of the frame, and its labels and predictions as class indices."""
    import pandas as pd

    if classes is not None:
        names = list(dict.fromkeys(_class_key(c) for c in classes))
        if not names:
            raise InvalidInput("classes must name at least one class")
        index = {k: i for i, k in enumerate(names)}
        for v in pd.unique(pd.concat([y, pred], ignore_index=True).dropna()):
            # values that are no class get codes of their own: "x" never matches "y"
            index.setdefault(_class_key(v), len(index))
        cls = _Classes(names, len(names) <= 2, len(names) - 1)
        return cls, _encode(y, index, _class_key), _encode(pred, index, _class_key)
    names = list(pd.unique(pd.concat([y, pred], ignore_index=True)))
    index = {v: i for i, v in enumerate(names)}
    binary = len(names) <= 2 and (pos_label in index or len(names) < 2)
    cls = _Classes(names, binary, index.get(pos_label, -1))
    return cls, _encode(y, index, lambda v: v), _encode(pred, index, lambda v: v)


def _metrics(task: str, y: Any, pred: Any, score: Any, cls: _Classes | None) -> dict[str, Any]:
    from sklearn import metrics as skm

    if task == "regression" or cls is None:
        return {
            "mae": float(skm.mean_absolute_error(y, pred)),
            "rmse": float(math.sqrt(skm.mean_squared_error(y, pred))),
        }
    # labels= keeps the averaging of the whole frame in a group that lacks a class; for one
    # label, macro averaging is scikit-learn's binary F1 of that class
    labels = [cls.positive] if cls.binary else list(range(len(cls.names)))
    f1 = skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    auc = None
    if score is not None and cls.binary:
        positive = y == cls.positive
        if 0 < positive.sum() < len(positive):
            auc = float(skm.roc_auc_score(positive, score))
    return {"accuracy": float(np.mean(y == pred)), "f1": float(f1), "auc": auc}


def live_performance(
    data: Any,
    *,
    task: str = "classification",
    label: str = "label",
    prediction: str = "prediction",
    score: str | None = None,
    by: Iterable[str] = (),
    segment: str | None = None,
    freq: str | None = None,
    timestamp: str = "timestamp",
    pos_label: Any = 1,
    min_segment_rows: int = 1,
    classes: Sequence[Any] | None = None,
) -> PerformanceReport:
    """Metrics of labelled predictions overall and per group.

    ``classes`` are the model's classes (e.g. its signature's): labels and predictions are then
    compared as the text of their values (``"1"`` equals ``1``), the positive class of a binary
    model is the last one (``pos_label`` is ignored) and F1 is macro-averaged over all of them
    when there are more than two. Without ``classes`` they are the labels and predictions seen in
    the whole frame, and F1 is binary for ``pos_label`` when there are at most two of them
    including ``pos_label``.

    Groups are the time bucket (``freq``, a pandas offset such as ``"1D"`` or ``"1h"``, on the
    ``timestamp`` column, reported under the key ``"window"``), the ``by`` columns (e.g.
    ``model_version``) and the ``segment`` column (e.g. ``carrier``). Gaps between segments
    only count segments with at least ``min_segment_rows`` labelled rows, so that a handful of
    rows cannot make the spread.
    """
    import pandas as pd

    if task not in ("classification", "regression"):
        raise InvalidInput(f"task must be 'classification' or 'regression', got {task!r}")
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    by = list(by)
    needed = [label, prediction, *by, *([segment] if segment else [])]
    needed += [score] if score else []
    needed += [timestamp] if freq else []
    for c in needed:
        if c not in frame.columns:
            raise SchemaMismatch(f"labelled predictions have no column {c!r}", column=c)
    if classes is not None and task != "classification":
        raise InvalidInput("classes are only meaningful for task='classification'")
    frame = frame.dropna(subset=[label, prediction])
    if frame.empty:
        raise InvalidInput("no labelled predictions to evaluate")
    y, pred = frame[label], frame[prediction]
    cls = None
    if task == "classification":
        cls, y, pred = _classes(y, pred, classes, pos_label)
    # compared values under private names, so that grouping columns are left as given
    frame = frame.assign(**{_Y: np.asarray(y), _PRED: np.asarray(pred)})

    def evaluate(part: pd.DataFrame) -> dict[str, float | None]:
        s = part[score].to_numpy() if score else None
        m = _metrics(task, part[_Y].to_numpy(), part[_PRED].to_numpy(), s, cls)
        return {k: _clean(v) for k, v in m.items()}

    keys: list[str] = []
    if freq:
        ts = pd.to_datetime(frame[timestamp], utc=True)
        try:
            frame = frame.assign(**{WINDOW: ts.dt.floor(freq)})
        except ValueError as exc:
            raise InvalidInput(f"bad freq {freq!r}: {exc}") from exc
        keys.append(WINDOW)
    keys += by
    if segment:
        keys.append(segment)
    overall = MetricRow({}, len(frame), evaluate(frame))
    rows: list[MetricRow] = []
    if keys:
        for values, part in frame.groupby(keys, sort=True, observed=True, dropna=False):
            group = dict(zip(keys, (_group_value(v) for v in values), strict=True))
            rows.append(MetricRow(group, len(part), evaluate(part)))
    gaps: list[SegmentGap] = []
    if segment:
        outer = [k for k in keys if k != segment]
        buckets: dict[tuple[str, ...], list[MetricRow]] = {}
        for r in rows:
            buckets.setdefault(tuple(r.group[k] for k in outer), []).append(r)
        for okey, members in buckets.items():
            for name in CLASSIFICATION if task == "classification" else REGRESSION:
                vals = [
                    (v, r.group[segment])
                    for r in members
                    if r.n >= min_segment_rows and (v := r.metrics[name]) is not None
                ]
                if len(vals) < 2:
                    continue
                hi, lo = max(vals), min(vals)
                group = dict(zip(outer, okey, strict=True))
                gaps.append(SegmentGap(group, name, hi[0], lo[0], hi[1], lo[1]))
    return PerformanceReport(task, overall, tuple(rows), tuple(gaps), tuple(keys))
