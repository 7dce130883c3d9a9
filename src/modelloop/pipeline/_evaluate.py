"""Evaluation on held-out data: metrics, metrics per segment, fairness, calibration, plots.

Metrics by task (``task`` is ``"binary"``, ``"multiclass"``, ``"classification"`` — binary or
multiclass from the labels — or ``"regression"``):

- binary: ``auc``, ``accuracy``, ``f1``, ``precision``, ``recall`` (of the positive class, the
  second of ``model.classes_``), ``log_loss``, ``brier``;
- multiclass: ``auc`` (macro one-vs-rest), ``accuracy``, macro ``f1``/``precision``/``recall``,
  ``log_loss``;
- regression: ``rmse``, ``mae``, ``r2``;
- always ``p95_latency_ms``: the 95th percentile over ``latency_repeats`` (20) samples, each
  the fastest of three rounds of timed calls (see :func:`paired_p95_latency_ms`), of
  predicting one batch of ``latency_batch_rows`` rows, after one untimed warm-up call
  (``predict_proba`` for classifiers that have it, else ``predict``), with native thread pools
  (OpenMP, BLAS) limited to ``latency_threads`` (1: one serving worker; None leaves them as
  they are). The time is the CPU time of the call (of the calling thread with one thread, of
  the process otherwise), not wall time: on a busy machine the wall time of a call grows with
  the time other processes hold the CPU, its CPU time hardly moves;
- ``segment_gap`` when segment columns are named: over those columns, the largest difference
  between the best and the worst segment in the primary metric (segments with at least
  ``min_segment_rows`` rows; 0.0 when fewer than two segments qualify);
- fairness when sensitive columns are named, the largest value over them of
  ``demographic_parity_difference`` and ``equalized_odds_difference`` (binary, fairlearn),
  ``accuracy_difference`` (multiclass) or ``mae_difference`` (regression), computed over the
  groups of at least ``min_segment_rows`` rows, as the segment gap is (a rate of a dozen rows
  says little); smaller groups are listed apart (``fairness_groups``), and a column with fewer
  than two groups that large reports no fairness value.

A metric that is undefined on the data (e.g. AUC with one class present) is left out, so a gate
on it fails naming it. The primary metric is ``auc`` for classifiers with ``predict_proba``,
``accuracy`` for other classifiers and ``rmse`` for regression.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Evaluation", "evaluate", "metric_names", "paired_p95_latency_ms"]

TASKS = ("binary", "multiclass", "classification", "regression")

#: The metrics :func:`evaluate` can report, by task (``classification``: binary or multiclass).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "auc", "brier", "f1", "log_loss", "precision", "recall"),
    "regression": ("mae", "r2", "rmse"),
}
#: Fairness metrics by task, reported when sensitive columns are named.
FAIRNESS_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (
        "accuracy_difference",
        "demographic_parity_difference",
        "equalized_odds_difference",
    ),
    "regression": ("mae_difference",),
}
LATENCY_METRIC = "p95_latency_ms"
SEGMENT_GAP_METRIC = "segment_gap"


def metric_names(
    task: str | None, *, segments: bool = False, sensitive: bool = False
) -> tuple[str, ...]:
    """Every metric name :func:`evaluate` can report for ``task`` (None: either task) with
    segment and sensitive columns named or not, sorted."""
    tasks = [task] if task in TASK_METRICS else list(TASK_METRICS)
    names = {LATENCY_METRIC}
    for t in tasks:
        names.update(TASK_METRICS[t])
        if sensitive:
            names.update(FAIRNESS_METRICS[t])
    if segments:
        names.add(SEGMENT_GAP_METRIC)
    return tuple(sorted(names))


@dataclass(frozen=True)
class Evaluation:
    """The outcome of :func:`evaluate`; every value is JSON-safe."""

    task: str
    metrics: dict[str, float]
    segments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    segment_gaps: dict[str, float] = field(default_factory=dict)
    fairness: dict[str, dict[str, float]] = field(default_factory=dict)
    #: per sensitive column: ``included`` and ``small`` groups (``value``, ``n``); fairness is
    #: computed over the included ones
    fairness_groups: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    primary_metric: str = "auc"
    n_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "primary_metric": self.primary_metric,
            "n_rows": self.n_rows,
            "metrics": dict(self.metrics),
            "segments": {k: list(v) for k, v in self.segments.items()},
            "segment_gaps": dict(self.segment_gaps),
            "fairness": {k: dict(v) for k, v in self.fairness.items()},
            "fairness_groups": {
                k: {part: list(rows) for part, rows in v.items()}
                for k, v in self.fairness_groups.items()
            },
            "calibration": self.calibration,
        }


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, not a number, NaN or infinite)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str | int | float | bool) else str(value)


def _safe(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    """The metric's value, or None where it is undefined on these labels."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return finite_or_none(fn(*args, **kwargs))
    except ValueError:
        return None


def _classification_metrics(
    y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: list[Any], binary: bool
) -> dict[str, float | None]:
    from sklearn import metrics as m

    out: dict[str, float | None] = {"accuracy": _safe(m.accuracy_score, y, pred)}
    if binary:
        pos = classes[1]
        for name, fn in (("f1", m.f1_score), ("precision", m.precision_score)):
            out[name] = _safe(fn, y, pred, pos_label=pos, zero_division=0)
        out["recall"] = _safe(m.recall_score, y, pred, pos_label=pos, zero_division=0)
    else:
        for name, fn in (("f1", m.f1_score), ("precision", m.precision_score)):
            out[name] = _safe(fn, y, pred, average="macro", zero_division=0)
        out["recall"] = _safe(m.recall_score, y, pred, average="macro", zero_division=0)
    if proba is not None:
        if binary:
            p = proba[:, 1]
            out["auc"] = _safe(m.roc_auc_score, y == classes[1], p)
            out["brier"] = _safe(m.brier_score_loss, y == classes[1], p)
        else:
            out["auc"] = _safe(
                m.roc_auc_score, y, proba, multi_class="ovr", average="macro", labels=classes
            )
        out["log_loss"] = _safe(m.log_loss, y, proba, labels=classes)
    return out


def _regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    from sklearn import metrics as m

    return {
        "rmse": _safe(lambda a, b: math.sqrt(m.mean_squared_error(a, b)), y, pred),
        "mae": _safe(m.mean_absolute_error, y, pred),
        "r2": _safe(m.r2_score, y, pred) if len(y) > 1 else None,
    }


def paired_p95_latency_ms(
    pairs: Sequence[tuple[Any, pd.DataFrame]],
    batch_rows: int = 1000,
    repeats: int = 20,
    threads: int | None = 1,
    rounds: int = 3,
) -> list[float]:
    """The p95 latency (ms of CPU time) of each ``(model, X)`` predicting one batch of
    ``batch_rows`` rows of its ``X``, over ``repeats`` samples.

    The calls of the models are interleaved (their order alternating from one repeat to the
    next), so that whatever slows the machine down slows them alike. The repeats are run
    ``rounds`` times over, and each sample is the fastest of its rounds: a burst of the
    machine's own (another process's page faults, a virtual machine's host taking the CPU
    back, which CPU time counts too) lasts a few calls of one round, not the same call of
    every round, so it does not reach the figure. The garbage collector is off during a timed
    call, as ``timeit`` does: a collection's pause belongs to whatever allocated before."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    batches = [_batch(X, batch_rows) for _, X in pairs]
    calls = [m.predict_proba if hasattr(m, "predict_proba") else m.predict for m, _ in pairs]
    # One thread: the model runs on this thread, and its CPU time is the call's own. Several:
    # the whole process's CPU time, which counts the pool's threads too.
    clock = time.thread_time if threads == 1 else time.process_time
    best = [[math.inf] * repeats for _ in calls]
    with threadpool_limits(threads) if threads else nullcontext():
        for call, batch in zip(calls, batches, strict=True):
            call(batch)  # warm-up: lazy initialisation, caches
        for _ in range(max(1, rounds)):
            for r in range(repeats):
                order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
                for i in order:
                    with _collector_off():
                        start = clock()
                        calls[i](batches[i])
                        took = (clock() - start) * 1000.0
                    best[i][r] = min(best[i][r], took)
    return [float(np.percentile(b, 95)) for b in best]


@contextmanager
def _collector_off() -> Iterator[None]:
    """The garbage collector off for a timed call, back as it was after it."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _batch(X: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``rows`` rows of ``X``, repeating it when it is shorter."""
    reps = math.ceil(rows / max(len(X), 1))
    batch = X if reps <= 1 else X.iloc[np.tile(np.arange(len(X)), reps)]
    return batch.iloc[:rows]


def _column(name: str, X: pd.DataFrame, segment_frame: pd.DataFrame | None) -> np.ndarray:
    if segment_frame is not None and name in segment_frame.columns:
        return segment_frame[name].to_numpy()
    if name in X.columns:
        return X[name].to_numpy()
    have = sorted(set(X.columns) | set(segment_frame.columns if segment_frame is not None else []))
    raise InvalidInput(f"evaluate: no column {name!r} for segments; columns: {', '.join(have)}")


def _groups(values: np.ndarray) -> dict[Any, np.ndarray]:
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out: dict[Any, np.ndarray] = {}
    for k, u in enumerate(uniques):
        out[_plain(u)] = np.flatnonzero(codes == k)
    missing = np.flatnonzero(codes == -1)
    if missing.size:
        out[None] = missing
    return out


def evaluate(
    model: Any,
    X: pd.DataFrame,
    y: Any,
    *,
    task: str,
    segment_frame: pd.DataFrame | None = None,
    segments: Sequence[str] = (),
    sensitive: Sequence[str] = (),
    min_segment_rows: int = 30,
    latency_batch_rows: int = 1000,
    out_dir: Path | None = None,
    latency_repeats: int = 20,
    calibration_bins: int = 10,
    latency_threads: int | None = 1,
) -> tuple[Evaluation, dict[str, Path]]:
    """Evaluate ``model`` on ``X``/``y`` (see the module doc for every metric).

    ``segment_frame`` holds segment and sensitive columns aligned row by row with ``X``; a name
    not found there is looked up in ``X``. With ``out_dir``, plots are written there as
    self-contained HTML (the plotly script is inlined, no network needed): ``roc.html``,
    ``pr.html`` and ``calibration.html`` for classifiers with probabilities, ``residuals.html``
    for regression. Returns the evaluation and ``{name: path}`` of the plots written.
    """
    if task not in TASKS:
        raise InvalidInput(f"evaluate: task {task!r} is not one of {', '.join(TASKS)}")
    y_arr = np.asarray(y)
    if len(y_arr) != len(X):
        raise InvalidInput(f"evaluate: X has {len(X)} rows but y has {len(y_arr)}")
    if len(X) == 0:
        raise InvalidInput("evaluate: no rows to evaluate on")
    if segment_frame is not None and len(segment_frame) != len(X):
        raise InvalidInput(
            f"evaluate: segment_frame has {len(segment_frame)} rows but X has {len(X)}"
        )
    pred = np.asarray(model.predict(X))
    proba = None
    classes: list[Any] = []
    if task == "regression":
        kind = "regression"
        primary = "rmse"
        pred = pred.astype("float64")
        y_arr = y_arr.astype("float64")
    else:
        classes = list(getattr(model, "classes_", np.unique(np.concatenate([y_arr, pred]))))
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X), dtype="float64")
        kind = (
            task if task != "classification" else ("binary" if len(classes) <= 2 else "multiclass")
        )
        if kind == "binary" and len(classes) != 2:
            raise InvalidInput(f"evaluate: a binary task needs 2 classes, the model has {classes}")
        primary = "auc" if proba is not None else "accuracy"
    scores = _task_metrics(y_arr, pred, proba, classes, kind)

    metrics = {k: v for k, v in scores.items() if v is not None}
    metrics[LATENCY_METRIC] = paired_p95_latency_ms(
        [(model, X)], latency_batch_rows, latency_repeats, latency_threads
    )[0]

    seg_rows, gaps = _segments(
        X, segment_frame, segments, y_arr, pred, proba, classes, kind, primary, min_segment_rows
    )
    if segments:
        metrics[SEGMENT_GAP_METRIC] = max(gaps.values(), default=0.0)
    fairness, fairness_groups = _fairness(
        X, segment_frame, sensitive, y_arr, pred, classes, kind, min_segment_rows
    )
    for per_column in fairness.values():
        for name, value in per_column.items():
            metrics[name] = max(metrics.get(name, -math.inf), value)

    calibration = _calibration(y_arr, pred, proba, classes, kind, calibration_bins)
    files = {}
    if out_dir is not None:
        files = _plots(out_dir, y_arr, pred, proba, classes, kind, calibration)
    evaluation = Evaluation(
        task=kind,
        metrics=metrics,
        segments=seg_rows,
        segment_gaps=gaps,
        fairness=fairness,
        fairness_groups=fairness_groups,
        calibration=calibration,
        primary_metric=primary,
        n_rows=len(X),
    )
    return evaluation, files


def _task_metrics(
    y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: list[Any], kind: str
) -> dict[str, float | None]:
    """The metrics of ``kind`` (regression, binary or multiclass) on these rows."""
    if kind == "regression":
        return _regression_metrics(y, pred)
    return _classification_metrics(y, pred, proba, classes, kind == "binary")


def _segments(
    X: pd.DataFrame,
    segment_frame: pd.DataFrame | None,
    segments: Sequence[str],
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any],
    kind: str,
    primary: str,
    min_rows: int,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    rows_by_col: dict[str, list[dict[str, Any]]] = {}
    gaps: dict[str, float] = {}
    for col in segments:
        values = _column(col, X, segment_frame)
        rows = []
        for value, idx in _groups(values).items():
            sub_p = proba[idx] if proba is not None else None
            scores = _task_metrics(y[idx], pred[idx], sub_p, classes, kind)
            row = {"value": value, "n": len(idx), **scores}
            row["included_in_gap"] = len(idx) >= min_rows and scores.get(primary) is not None
            rows.append(row)
        rows.sort(key=lambda r: -r["n"])
        ranked = [r[primary] for r in rows if r["included_in_gap"]]
        gaps[col] = float(max(ranked) - min(ranked)) if len(ranked) >= 2 else 0.0
        rows_by_col[col] = rows
    return rows_by_col, gaps


def _fairness(
    X: pd.DataFrame,
    segment_frame: pd.DataFrame | None,
    sensitive: Sequence[str],
    y_all: np.ndarray,
    pred_all: np.ndarray,
    classes: list[Any],
    kind: str,
    min_rows: int = 1,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[dict[str, Any]]]]]:
    """Fairness differences per sensitive column over its groups of at least ``min_rows`` rows,
    and those groups and the smaller ones, listed apart."""
    if not sensitive:
        return {}, {}
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
    )
    from sklearn.metrics import accuracy_score, mean_absolute_error

    out: dict[str, dict[str, float]] = {}
    listed: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for col in sensitive:
        all_groups = _column(col, X, segment_frame).astype(str)
        counts = pd.Series(all_groups).value_counts()
        big = counts[counts >= min_rows]
        listed[col] = {
            "included": [{"value": str(v), "n": int(n)} for v, n in big.items()],
            "small": [{"value": str(v), "n": int(n)} for v, n in counts[counts < min_rows].items()],
        }
        if len(big) < 2:  # no difference between groups large enough to measure
            out[col] = {}
            continue
        keep = np.isin(all_groups, big.index.to_numpy())
        groups, y, pred = all_groups[keep], y_all[keep], pred_all[keep]
        if kind == "binary":
            yt, yp = (y == classes[1]).astype(int), (pred == classes[1]).astype(int)
            values = {
                "demographic_parity_difference": demographic_parity_difference(
                    yt, yp, sensitive_features=groups
                ),
                "equalized_odds_difference": equalized_odds_difference(
                    yt, yp, sensitive_features=groups
                ),
            }
        elif kind == "multiclass":
            frame = MetricFrame(
                metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=groups
            )
            values = {"accuracy_difference": frame.difference()}
        else:
            frame = MetricFrame(
                metrics=mean_absolute_error, y_true=y, y_pred=pred, sensitive_features=groups
            )
            values = {"mae_difference": frame.difference()}
        out[col] = {
            k: v for k, v in ((k, finite_or_none(v)) for k, v in values.items()) if v is not None
        }
    return out, listed


def _calibration(
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any],
    kind: str,
    bins: int,
) -> dict[str, Any] | None:
    """Reliability table: predicted probability against observed frequency per bin."""
    if proba is None or kind == "regression":
        return None
    if kind == "binary":
        p, hit, what = proba[:, 1], (y == classes[1]), f"P({_plain(classes[1])})"
    else:  # confidence of the predicted class against its accuracy
        p, hit, what = proba.max(axis=1), (pred == y), "confidence of the predicted class"
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if not n:
            continue
        mean_p, freq = float(p[mask].mean()), float(hit[mask].mean())
        table.append({"bin": b, "n": n, "mean_predicted": mean_p, "observed": freq})
        ece += n / len(p) * abs(mean_p - freq)
    return {"of": what, "bins": bins, "table": table, "ece": float(ece)}


def _plots(
    out_dir: Path,
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: list[Any],
    kind: str,
    calibration: dict[str, Any] | None,
) -> dict[str, Path]:
    import plotly.graph_objects as go
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Any] = {}
    if kind == "regression":
        fig = go.Figure(go.Scattergl(x=pred, y=y - pred, mode="markers", marker={"size": 4}))
        fig.add_hline(y=0.0, line_dash="dash")
        fig.update_layout(
            title="residuals", xaxis_title="predicted", yaxis_title="actual - predicted"
        )
        figs["residuals"] = fig
    elif proba is not None:
        pairs = (
            [(str(_plain(classes[1])), y == classes[1], proba[:, 1])]
            if kind == "binary"
            else [(str(_plain(c)), y == c, proba[:, k]) for k, c in enumerate(classes)]
        )
        roc, pr = go.Figure(), go.Figure()
        areas: list[tuple[float, float]] = []  # (AUC, AP) of each curve drawn
        for label, truth, score in pairs:
            if truth.all() or not truth.any():
                continue
            fpr, tpr, _ = roc_curve(truth, score)
            auc = roc_auc_score(truth, score)
            roc.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{label} (AUC {auc:.3f})"))
            precision, recall, _ = precision_recall_curve(truth, score)
            ap = average_precision_score(truth, score)
            pr.add_trace(
                go.Scatter(x=recall, y=precision, mode="lines", name=f"{label} (AP {ap:.3f})")
            )
            areas.append((auc, ap))
        roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line_dash="dash"))
        roc_title, pr_title = "ROC", "precision-recall"
        if len(areas) == 1:  # the area in the title too: one number is what most readers want
            roc_title += f", AUC {areas[0][0]:.3f}"
            pr_title += f", AP {areas[0][1]:.3f}"
        roc.update_layout(
            title=roc_title, xaxis_title="false positive rate", yaxis_title="true positive rate"
        )
        pr.update_layout(title=pr_title, xaxis_title="recall", yaxis_title="precision")
        figs["roc"], figs["pr"] = roc, pr
        if calibration is not None:
            rows = calibration["table"]
            cal = go.Figure(
                go.Scatter(
                    x=[r["mean_predicted"] for r in rows],
                    y=[r["observed"] for r in rows],
                    mode="lines+markers",
                    name="model",
                    text=[f"n={r['n']}" for r in rows],
                )
            )
            cal.add_trace(
                go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line_dash="dash")
            )
            cal.update_layout(
                title=f"calibration ({calibration['of']}, ECE {calibration['ece']:.3f})",
                xaxis_title="mean predicted probability",
                yaxis_title="observed frequency",
            )
            figs["calibration"] = cal
    files = {}
    for name, fig in figs.items():
        path = out_dir / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        files[name] = path
    return files
