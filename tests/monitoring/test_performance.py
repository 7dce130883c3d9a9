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
