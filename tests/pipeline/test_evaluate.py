"""Evaluation: metrics for binary, multiclass and regression, per-segment metrics with the
best-worst gap, fairness differences, calibration and self-contained plots."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._evaluate import evaluate


def _split(loader):
    X, y = loader(return_X_y=True, as_frame=True)
    return train_test_split(X, y, test_size=0.4, random_state=0, stratify=None)


def _assert_self_contained(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>") and "</html>" in text
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # no script fetched from anywhere
    assert len(text) > 1_000_000  # the plotly library itself is inlined


@pytest.fixture(scope="module")
def cancer():
    X_tr, X_te, y_tr, y_te = _split(load_breast_cancer)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_tr, y_tr)
    return model, X_te.reset_index(drop=True), y_te.to_numpy()


def test_binary_metrics_segments_fairness_calibration_and_plots(cancer, tmp_path: Path) -> None:
    model, X, y = cancer
    n = len(X)
    rng = np.random.default_rng(1)
    group = np.where(np.arange(n) < n // 2, "a", "b").astype(object)
    group[:12] = "tiny"  # too few rows to count in the gap
    y = y.copy()
    flip = group == "b"
    y[flip] = 1 - y[flip]  # the model is wrong on purpose on segment b
    seg = pd.DataFrame({"group": group, "sex": rng.choice(["f", "m"], n)})

    ev, files = evaluate(
        model,
        X,
        y,
        task="binary",
        segment_frame=seg,
        segments=["group"],
        sensitive=["sex", "group"],
        latency_batch_rows=300,
        out_dir=tmp_path,
    )
    proba = model.predict_proba(X)[:, 1]
    pred = model.predict(X)
    assert ev.task == "binary" and ev.primary_metric == "auc" and ev.n_rows == n
    assert ev.metrics["auc"] == pytest.approx(roc_auc_score(y, proba))
    assert ev.metrics["accuracy"] == pytest.approx(accuracy_score(y, pred))
    for key in ("f1", "precision", "recall", "log_loss", "brier", "p95_latency_ms"):
        assert key in ev.metrics
    assert ev.metrics["p95_latency_ms"] > 0

    rows = {r["value"]: r for r in ev.segments["group"]}
    assert sum(r["n"] for r in rows.values()) == n
    assert not rows["tiny"]["included_in_gap"] and rows["a"]["included_in_gap"]
    auc_a = roc_auc_score(y[group == "a"], proba[group == "a"])
    auc_b = roc_auc_score(y[group == "b"], proba[group == "b"])
    assert rows["a"]["auc"] == pytest.approx(auc_a) and rows["b"]["auc"] == pytest.approx(auc_b)
    assert ev.segment_gaps["group"] == pytest.approx(abs(auc_a - auc_b))
    assert ev.metrics["segment_gap"] == pytest.approx(abs(auc_a - auc_b)) and auc_a - auc_b > 0.5

    sel = {g: pred[seg["sex"] == g].mean() for g in ("f", "m")}
    dpd = abs(sel["f"] - sel["m"])
    assert ev.fairness["sex"]["demographic_parity_difference"] == pytest.approx(dpd)
    assert "equalized_odds_difference" in ev.fairness["group"]
    assert ev.metrics["demographic_parity_difference"] == pytest.approx(
        max(f["demographic_parity_difference"] for f in ev.fairness.values())
    )

    cal = ev.calibration
    assert cal is not None and sum(b["n"] for b in cal["table"]) == n and 0 <= cal["ece"] <= 1
    assert set(files) == {"roc", "pr", "calibration"}
    for name, path in files.items():
        assert path == tmp_path / f"{name}.html"
        _assert_self_contained(path)
    from sklearn.metrics import average_precision_score

    # the plots state the areas they draw
    assert f"ROC, AUC {ev.metrics['auc']:.3f}" in files["roc"].read_text()
    ap = average_precision_score(y, proba)
    assert f"precision-recall, AP {ap:.3f}" in files["pr"].read_text()
    as_dict = ev.to_dict()
    assert as_dict["metrics"] == ev.metrics and as_dict["segment_gaps"]["group"] > 0.5


def test_multiclass_from_classification_task(tmp_path: Path) -> None:
    X_tr, X_te, y_tr, y_te = _split(load_wine)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_tr, y_tr)
    seg = pd.DataFrame({"alcohol_high": (X_te["alcohol"] > 13).to_numpy()})
    ev, files = evaluate(
        model,
        X_te,
        y_te,
        task="classification",
        segment_frame=seg,
        segments=["alcohol_high"],
        sensitive=["alcohol_high"],
        min_segment_rows=10,
        out_dir=tmp_path,
    )
    assert ev.task == "multiclass" and ev.primary_metric == "auc"
    expected = roc_auc_score(y_te, model.predict_proba(X_te), multi_class="ovr", average="macro")
    assert ev.metrics["auc"] == pytest.approx(expected)
    assert "brier" not in ev.metrics and "log_loss" in ev.metrics
    assert set(ev.fairness["alcohol_high"]) == {"accuracy_difference"}
    assert ev.calibration is not None
    assert ev.calibration["of"] == "confidence of the predicted class"
    assert {r["value"] for r in ev.segments["alcohol_high"]} == {True, False}
    assert set(files) == {"roc", "pr", "calibration"}


def test_regression_metrics_segments_and_residual_plot(tmp_path: Path) -> None:
    X_tr, X_te, y_tr, y_te = _split(load_diabetes)
    model = Ridge().fit(X_tr, y_tr)
    # "sex" is a model feature: segments may come from X itself
    ev, files = evaluate(
        model, X_te, y_te, task="regression", segments=["sex"], sensitive=["sex"], out_dir=tmp_path
    )
    pred = model.predict(X_te)
    assert ev.task == "regression" and ev.primary_metric == "rmse"
    assert ev.metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_te, pred)))
    assert {"mae", "r2", "p95_latency_ms", "segment_gap", "mae_difference"} <= set(ev.metrics)
    rmse = [r["rmse"] for r in ev.segments["sex"]]
    assert len(rmse) == 2 and ev.metrics["segment_gap"] == pytest.approx(max(rmse) - min(rmse))
    assert ev.calibration is None
    assert set(files) == {"residuals"}
    _assert_self_contained(files["residuals"])


def test_classifier_without_probabilities_uses_accuracy(cancer) -> None:
    _, X, y = cancer
    model = make_pipeline(StandardScaler(), LinearSVC()).fit(X, y)
    ev, files = evaluate(model, X, y, task="binary", latency_repeats=3)
    assert ev.primary_metric == "accuracy" and "auc" not in ev.metrics
    assert "segment_gap" not in ev.metrics  # no segments named
    assert ev.calibration is None and files == {}


def test_undefined_metric_is_left_out(cancer) -> None:
    model, X, y = cancer
    only_ones = np.ones(len(y), dtype=int)
    ev, _ = evaluate(model, X, only_ones, task="binary", latency_repeats=2)
    assert "auc" not in ev.metrics and "accuracy" in ev.metrics


def test_bad_arguments_name_what_is_wrong(cancer) -> None:
    model, X, y = cancer
    with pytest.raises(InvalidInput, match="'region'"):
        evaluate(model, X, y, task="binary", segments=["region"], latency_repeats=1)
    with pytest.raises(InvalidInput, match="task 'ranking'"):
        evaluate(model, X, y, task="ranking")
    with pytest.raises(InvalidInput, match="y has 3"):
        evaluate(model, X, y[:3], task="binary")


def test_fairness_counts_only_groups_of_min_segment_rows(cancer) -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    model, X, y = cancer
    n = len(X)  # 228 test rows
    pred = model.predict(X)
    group = np.where(np.arange(n) % 2 == 0, "a", "b").astype(object)
    # two small groups where the model is always right, or always wrong: extreme rates
    small_right = np.flatnonzero(pred == y)[:14]
    small_wrong = np.flatnonzero(pred != y)[:8]
    group[small_right], group[small_wrong] = "c", "d"
    y = y.copy()
    seg = pd.DataFrame({"carrier": group})
    ev, _ = evaluate(
        model,
        X,
        y,
        task="binary",
        segment_frame=seg,
        sensitive=["carrier"],
        min_segment_rows=30,
        latency_batch_rows=50,
        latency_repeats=2,
    )
    big = np.isin(group, ["a", "b"])
    expected = {
        "demographic_parity_difference": demographic_parity_difference(
            y[big], pred[big], sensitive_features=group[big]
        ),
        "equalized_odds_difference": equalized_odds_difference(
            y[big], pred[big], sensitive_features=group[big]
        ),
    }
    for name, value in expected.items():
        assert ev.fairness["carrier"][name] == pytest.approx(value, abs=1e-12)
        assert ev.metrics[name] == pytest.approx(value, abs=1e-12)
    # with every group counted, the small ones decide the figure
    unfiltered = equalized_odds_difference(y, pred, sensitive_features=group)
    assert unfiltered > expected["equalized_odds_difference"] + 0.1
    groups = ev.fairness_groups["carrier"]
    assert {g["value"]: g["n"] for g in groups["small"]} == {"c": 14, "d": len(small_wrong)}
    assert sorted(g["value"] for g in groups["included"]) == ["a", "b"]
    assert ev.to_dict()["fairness_groups"]["carrier"]["small"] == groups["small"]
    # fewer than two groups large enough: no fairness value, so a gate on it cannot pass
    lone, _ = evaluate(
        model,
        X,
        y,
        task="binary",
        segment_frame=seg,
        sensitive=["carrier"],
        min_segment_rows=n,
        latency_batch_rows=50,
        latency_repeats=2,
    )
    assert lone.fairness["carrier"] == {} and "equalized_odds_difference" not in lone.metrics
    assert len(lone.fairness_groups["carrier"]["small"]) == 4
