"""Streamed live metrics equal scikit-learn's computed on all rows at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, roc_auc_score

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._live import LiveMetricsAccumulator


def _frame(n: int, classes: list, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(classes, n)
    noisy = np.where(rng.random(n) < 0.8, label, rng.choice(classes, n))
    return pd.DataFrame(
        {
            "label": label,
            "prediction": noisy,
            "score": np.clip(rng.normal(0.3 + 0.4 * (label == classes[-1]), 0.2), 0, 1),
            "model_version": rng.choice([1, 2], n),
            "carrier": rng.choice(["AA", "UA", "B6"], n),
            "timestamp": pd.Timestamp("2026-11-27", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 3 * 3600, n), unit="s"),
        }
    )


def _feed(acc: LiveMetricsAccumulator, frame: pd.DataFrame, size: int) -> LiveMetricsAccumulator:
    for start in range(0, len(frame), size):
        acc.update(frame.iloc[start : start + size])
    return acc


def test_binary_metrics_by_group_match_sklearn_across_batches() -> None:
    df = _frame(20_000, [0, 1])
    report = _feed(
        LiveMetricsAccumulator(task="classification", classes=[0, 1], segment="carrier"), df, 3_333
    ).report()
    assert report.overall.n == 20_000
    assert report.metric("accuracy") == pytest.approx(accuracy_score(df.label, df.prediction))
    assert report.metric("f1") == pytest.approx(f1_score(df.label, df.prediction))
    assert report.metric("auc") == pytest.approx(roc_auc_score(df.label, df.score), abs=1e-4)
    ua = df[df.carrier == "UA"]
    assert report.metric("f1", carrier="UA") == pytest.approx(f1_score(ua.label, ua.prediction))
    v2 = df[df.model_version == 2]
    assert report.metric("accuracy", model_version="2") == pytest.approx(
        accuracy_score(v2.label, v2.prediction)
    )
    hours = {r.group["window"] for r in report.rows if "window" in r.group}
    assert len(hours) == 3 and all(h.endswith("+00:00") for h in hours)
    gap = next(g for g in report.gaps if g.metric == "accuracy")
    per = df.groupby("carrier")[["label", "prediction"]].apply(
        lambda d: accuracy_score(d.label, d.prediction)
    )
    assert gap.gap == pytest.approx(per.max() - per.min())


def test_string_labels_and_multiclass_macro_f1() -> None:
    df = _frame(9_000, ["a", "b", "c"], seed=1)
    df["label"] = df["label"].astype(str)
    report = _feed(
        LiveMetricsAccumulator(task="classification", classes=["a", "b", "c"]), df, 1000
    ).report()
    assert report.metric("f1") == pytest.approx(
        f1_score(df.label, df.prediction, average="macro", labels=["a", "b", "c"])
    )
    assert report.metric("auc") is None  # not binary
    ints = _frame(4_000, [0, 1], seed=2)
    as_text = ints.assign(label=ints.label.astype(str))
    a = LiveMetricsAccumulator(task="classification", classes=[0, 1]).update(ints).report()
    b = LiveMetricsAccumulator(task="classification", classes=[0, 1]).update(as_text).report()
    assert a.overall.metrics == b.overall.metrics


def test_regression_errors_are_exact() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"label": rng.normal(size=5000), "prediction": rng.normal(size=5000)})
    report = _feed(LiveMetricsAccumulator(task="regression"), df, 700).report()
    assert report.metric("mae") == pytest.approx(mean_absolute_error(df.label, df.prediction))
    rmse = float(np.sqrt(np.mean((df.label - df.prediction) ** 2)))
    assert report.metric("rmse") == pytest.approx(rmse)


def test_missing_scores_unknown_classes_and_bad_scores() -> None:
    df = _frame(6_000, [0, 1], seed=4)
    with_gaps = df.assign(score=df.score.where(np.arange(len(df)) % 5 != 0))
    report = LiveMetricsAccumulator(task="classification", classes=[0, 1]).update(with_gaps)
    scored = with_gaps.dropna(subset=["score"])
    assert report.report().metric("auc") == pytest.approx(
        roc_auc_score(scored.label, scored.score), abs=1e-4
    )
    odd = pd.DataFrame({"label": ["x", "x", 1], "prediction": ["y", "x", 1]})
    acc = LiveMetricsAccumulator(task="classification", classes=[0, 1]).update(odd).report()
    assert acc.metric("accuracy") == pytest.approx(2 / 3)  # "x" vs "y" is no match
    with pytest.raises(Exception, match=r"\[0, 1\]"):
        LiveMetricsAccumulator(task="classification", classes=[0, 1]).update(
            df.assign(score=df.score * 3)
        )


def test_rows_without_labels_leave_the_accumulator_empty() -> None:
    acc = LiveMetricsAccumulator(task="regression")
    acc.update(pd.DataFrame({"label": [None, None], "prediction": [1.0, 2.0]}))
    assert acc.empty and acc.groups == {}
    with pytest.raises(InvalidInput, match="no labelled predictions"):
        acc.report()
    acc.update(pd.DataFrame({"label": [1.0], "prediction": [3.0]}))
    assert not acc.empty and acc.report().overall.metrics["mae"] == 2.0
