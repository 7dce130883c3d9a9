"""Live performance equals scikit-learn's metrics computed directly on each group."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from modelloop.exceptions import InvalidInput, SchemaMismatch
from modelloop.monitoring import PerformanceReport, join_labels, live_performance


@pytest.fixture
def logged() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 6_000
    y = rng.integers(0, 2, n)
    carrier = rng.choice(["AA", "UA", "DL"], n)
    noise = np.where(carrier == "UA", 0.45, 0.2)  # UA is served worse
    score = np.clip(y + rng.normal(0, noise * 2, n), 0, 1)
    preds = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "timestamp": pd.date_range("2026-01-01", periods=n, freq="1min", tz="UTC"),
            "model_version": rng.choice(["1", "2"], n),
            "carrier": carrier,
            "prediction": (score > 0.5).astype(int),
            "proba": score,
        }
    )
    labels = pd.DataFrame({"request_id": preds.request_id, "label": y}).sample(
        frac=0.7, random_state=1
    )  # feedback arrives for 70% of requests
    return preds, labels


def test_join_and_metrics_equal_sklearn(logged) -> None:
    preds, labels = logged
    joined = join_labels(preds, labels)
    assert len(joined) == len(labels)
    rep = live_performance(
        joined, score="proba", by=["model_version"], segment="carrier", freq="1D"
    )
    assert rep.overall.metrics["accuracy"] == skm.accuracy_score(joined.label, joined.prediction)
    assert rep.overall.metrics["auc"] == pytest.approx(
        skm.roc_auc_score(joined.label, joined.proba)
    )
    for row in rep.rows:
        g = row.group
        part = joined[
            (joined.timestamp.dt.floor("1D").map(lambda t: t.isoformat()) == g["window"])
            & (joined.model_version == g["model_version"])
            & (joined.carrier == g["carrier"])
        ]
        assert row.n == len(part)
        assert row.metrics["accuracy"] == pytest.approx(
            skm.accuracy_score(part.label, part.prediction)
        )
        assert row.metrics["f1"] == pytest.approx(skm.f1_score(part.label, part.prediction))
        assert row.metrics["auc"] == pytest.approx(skm.roc_auc_score(part.label, part.proba))
    assert len(rep.rows) == 5 * 2 * 3  # 6000 minutes span 5 days
    # gaps: UA is the worst carrier everywhere
    acc_gaps = [g for g in rep.gaps if g.metric == "accuracy"]
    assert len(acc_gaps) == 10 and all(g.min_segment == "UA" and g.gap > 0.05 for g in acc_gaps)
    back = PerformanceReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert back == rep


def test_per_version_only_and_lookup(logged) -> None:
    preds, labels = logged
    joined = join_labels(preds, labels)
    rep = live_performance(joined, by=["model_version"])
    v2 = joined[joined.model_version == "2"]
    assert rep.metric("accuracy", model_version="2") == pytest.approx(
        skm.accuracy_score(v2.label, v2.prediction)
    )
    assert rep.metric("auc") is None  # no score column given
    with pytest.raises(InvalidInput, match="no group"):
        rep.metric("accuracy", model_version="9")


def test_regression_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    df = pd.DataFrame(
        {"label": y, "prediction": y + rng.normal(0, 0.3, 500), "seg": rng.choice(["a", "b"], 500)}
    )
    rep = live_performance(df, task="regression", segment="seg")
    assert rep.overall.metrics["mae"] == pytest.approx(
        skm.mean_absolute_error(df.label, df.prediction)
    )
    assert rep.overall.metrics["rmse"] == pytest.approx(
        math.sqrt(skm.mean_squared_error(df.label, df.prediction))
    )
    assert {g.metric for g in rep.gaps} == {"mae", "rmse"}


def test_multiclass_uses_macro_f1_and_later_labels_win() -> None:
    preds = pd.DataFrame(
        {"request_id": list("abcdef"), "prediction": ["x", "y", "z", "x", "y", "z"]}
    )
    labels = pd.DataFrame(
        {"request_id": list("abcdefa"), "label": ["x", "y", "y", "x", "z", "z", "y"]}
    )
    joined = join_labels(preds, labels)
    assert joined.set_index("request_id").label["a"] == "y"
    rep = live_performance(joined)
    assert rep.overall.metrics["f1"] == pytest.approx(
        skm.f1_score(joined.label, joined.prediction, average="macro")
    )
    with pytest.raises(SchemaMismatch, match="'label'"):
        join_labels(preds, labels.rename(columns={"label": "y"}))


def _binary_frame(n: int = 800) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, n)
    score = np.clip(y * 0.6 + rng.normal(0.2, 0.3, n), 0, 1)
    return pd.DataFrame(
        {
            "label": y,
            "prediction": (score > 0.5).astype(int),
            "proba": score,
            "seg": rng.choice(["a", "b"], n),
        }
    )


def test_string_labels_against_int_predictions_with_classes() -> None:
    ints = _binary_frame()
    strs = ints.assign(label=ints.label.astype(str))  # feedback arrived as text
    expected = live_performance(ints, score="proba", segment="seg")
    got = live_performance(strs, score="proba", segment="seg", classes=[0, 1])
    assert got.overall.metrics == expected.overall.metrics
    assert [r.metrics for r in got.rows] == [r.metrics for r in expected.rows]
    assert got.overall.metrics["accuracy"] == skm.accuracy_score(ints.label, ints.prediction)
    assert got.overall.metrics["f1"] == pytest.approx(skm.f1_score(ints.label, ints.prediction))
    assert got.overall.metrics["auc"] == pytest.approx(skm.roc_auc_score(ints.label, ints.proba))


def test_named_classes_positive_is_the_last() -> None:
    ints = _binary_frame()
    names = np.array(["late", "on_time"])
    named = ints.assign(label=names[ints.label], prediction=names[ints.prediction])
    rep = live_performance(named, score="proba", segment="seg", classes=["late", "on_time"])
    for part, metrics in [(named, rep.overall.metrics)] + [
        (named[named.seg == r.group["seg"]], r.metrics) for r in rep.rows
    ]:
        assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(part.label, part.prediction))
        assert metrics["f1"] == pytest.approx(
            skm.f1_score(part.label, part.prediction, pos_label="on_time")
        )
        assert metrics["auc"] == pytest.approx(
            skm.roc_auc_score(part.label == "on_time", part.proba)
        )
    # without classes the two names are inferred once; no class is 1, so F1 is macro-averaged
    inferred = live_performance(named)
    assert inferred.overall.metrics["f1"] == pytest.approx(
        skm.f1_score(named.label, named.prediction, average="macro")
    )


def test_multiclass_decision_is_made_once_for_the_frame() -> None:
    rng = np.random.default_rng(5)
    n = 600
    seg = np.repeat(["full", "pair"], n // 2)
    y = np.where(seg == "full", rng.choice(["x", "y", "z"], n), rng.choice(["x", "y"], n))
    pred = np.where(rng.random(n) < 0.7, y, np.where(seg == "full", "z", "x"))
    frame = pd.DataFrame({"label": y, "prediction": pred, "seg": seg})
    pair = frame[frame.seg == "pair"]
    assert set(pair.label) | set(pair.prediction) == {"x", "y"}  # a segment lacking a class
    labels = ["x", "y", "z"]
    for kw in ({}, {"classes": labels}):
        rep = live_performance(frame, segment="seg", **kw)
        assert rep.overall.metrics["f1"] == pytest.approx(
            skm.f1_score(frame.label, frame.prediction, average="macro", labels=labels)
        )
        assert rep.metric("f1", seg="pair") == pytest.approx(
            skm.f1_score(
                pair.label, pair.prediction, average="macro", labels=labels, zero_division=0
            )
        )
        assert rep.metric("f1", seg="pair") != pytest.approx(
            skm.f1_score(pair.label, pair.prediction, pos_label="y")
        )


def test_binary_segment_with_one_class_keeps_binary_f1() -> None:
    """Inferred once from the whole frame: a segment seeing only class 0 is still binary F1."""
    frame = pd.DataFrame(
        {"label": [0, 0, 0, 1, 1, 0], "prediction": [0, 0, 1, 1, 0, 0], "seg": list("aaabbb")}
    )
    rep = live_performance(frame, segment="seg")
    a = frame[frame.seg == "a"]
    assert rep.metric("f1", seg="a") == skm.f1_score(a.label, a.prediction, zero_division=0)
    with pytest.raises(InvalidInput, match="classes"):
        live_performance(frame, classes=[])


def test_corrected_label_wins_by_timestamp_not_row_order() -> None:
    preds = pd.DataFrame({"request_id": ["a", "b"], "prediction": [1, 0]})
    labels = pd.DataFrame(
        {
            "request_id": ["a", "b", "a"],
            "label": [0, 0, 1],
            # the correction of "a" (label 0) is newer than the label given after it in row order
            "timestamp": pd.to_datetime(
                ["2026-03-02 12:00", "2026-03-02 09:00", "2026-03-02 10:00"], utc=True
            ),
        }
    )
    joined = join_labels(preds, labels).set_index("request_id")
    assert joined.label.to_dict() == {"a": 0, "b": 0}
    assert join_labels(preds, labels, order_by=None).set_index("request_id").label["a"] == 1
    stamped = labels.rename(columns={"timestamp": "at"})
    assert join_labels(preds, stamped, order_by="at").set_index("request_id").label["a"] == 0
