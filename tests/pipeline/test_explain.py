"""Explanations: SHAP values on raw input columns (strings included) rank a planted informative
feature above noise; permutation importance with a note where SHAP cannot explain the model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._explain import explain


def _planted(n: int = 1500, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``signal`` and ``tier`` decide the label; ``noise`` and ``city`` are pure noise."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "tier": rng.choice(["gold", "silver", "bronze"], n),
            "city": rng.choice(["NYC", "SFO", "BOS", "ORD"], n),
        }
    )
    logit = 2.5 * X["signal"] + 1.5 * (X["tier"] == "gold") - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return X, y


def _encoded_model() -> Pipeline:
    """Strings ordinal-encoded inside the model, as the flights quickstart model does."""
    encode = ColumnTransformer(
        [
            ("num", "passthrough", ["signal", "noise"]),
            (
                "cat",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ["tier", "city"],
            ),
        ]
    )
    clf = HistGradientBoostingClassifier(max_iter=60, categorical_features=[2, 3], random_state=0)
    return Pipeline([("encode", encode), ("clf", clf)])


class LabelOnlyClassifier(ClassifierMixin, BaseEstimator):
    """Wraps a rule given as a callable; predicts text labels and has no probabilities."""

    def __init__(self, rule: Any = None) -> None:
        self.rule = rule

    def fit(self, X: pd.DataFrame, y: Any) -> LabelOnlyClassifier:
        self.classes_ = np.array(["no", "yes"])
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.where(self.rule(X), "yes", "no")


@pytest.fixture(scope="module")
def planted() -> tuple[Pipeline, pd.DataFrame, np.ndarray]:
    X, y = _planted()
    return _encoded_model().fit(X, y), X, y


def test_shap_ranks_planted_feature_above_noise_on_raw_columns(planted, tmp_path: Path) -> None:
    model, X, y = planted
    ex, files = explain(model, X, y, task="binary", n_local=5, out_dir=tmp_path)
    assert ex.method == "shap" and ex.note is None and ex.n_rows == 500
    imp = ex.global_importance
    assert list(imp) == sorted(imp, key=lambda k: -imp[k])  # sorted, largest first
    assert set(imp) == {"signal", "noise", "tier", "city"}  # raw columns, not encoded ones
    assert next(iter(imp)) == "signal"
    assert imp["signal"] > 5 * imp["noise"] and imp["tier"] > 2 * imp["city"]

    assert len(ex.local) == 5
    proba = model.predict_proba(X)[:, 1]
    for entry in ex.local:
        assert set(entry["contributions"]) == set(imp)
        assert entry["prediction"] == pytest.approx(proba[entry["row"]])
        # contributions add up to the prediction minus the mean prediction on the background
        total = sum(entry["contributions"].values())
        assert total == pytest.approx(entry["prediction"] - entry["base_value"], abs=1e-9)

    assert files == {"shap": tmp_path / "shap.html"}
    html = files["shap"].read_text(encoding="utf-8")
    assert "signal" in html and "mean |SHAP value|" in html and len(html) > 1_000_000
    assert ex.to_dict()["global_importance"] == imp


def test_explanations_for_multiclass_and_regression() -> None:
    X, y = load_wine(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=5000).fit(X, y)
    ex, _ = explain(model, X, task="multiclass", max_rows=60, n_local=3)
    assert ex.method == "shap" and len(ex.global_importance) == X.shape[1]
    assert {e["class"] for e in ex.local} <= {0, 1, 2}
    for e in ex.local:
        total = sum(e["contributions"].values())
        assert total == pytest.approx(e["prediction"] - e["base_value"], abs=1e-9)

    Xr, yr = load_diabetes(return_X_y=True, as_frame=True)
    reg = Ridge().fit(Xr, yr)
    ex_r, _ = explain(reg, Xr, task="regression", max_rows=100, n_local=2)
    # for a linear model the SHAP value of a feature is coef * (x - mean of the background)
    top = max(range(Xr.shape[1]), key=lambda j: abs(reg.coef_[j]) * Xr.iloc[:, j].std())
    assert next(iter(ex_r.global_importance)) == Xr.columns[top]
    assert ex_r.base_value is not None


def test_permutation_importance_with_note_when_shap_cannot_explain(tmp_path: Path) -> None:
    X, y01 = _planted(600)
    y = np.where(y01 == 1, "yes", "no")
    model = LabelOnlyClassifier(lambda f: f["signal"] > 0).fit(X, y)
    ex, files = explain(model, X, y, task="binary", out_dir=tmp_path)
    assert ex.method == "permutation" and ex.local == []
    assert ex.note is not None and ex.note.startswith("SHAP could not explain the model (")
    assert "permutation importance" in ex.note and "accuracy" in ex.note
    assert next(iter(ex.global_importance)) == "signal"
    assert ex.global_importance["signal"] > 0.2 and abs(ex.global_importance["noise"]) < 0.02
    assert files == {"importance": tmp_path / "importance.html"}
    assert files["importance"].stat().st_size > 1_000_000

    with pytest.raises(InvalidInput, match="SHAP could not explain the model"):
        explain(model, X, y, task="binary", method="shap")


def test_permutation_can_be_requested_and_works_without_labels(planted) -> None:
    model, X, _ = planted
    ex, files = explain(model, X, task="binary", max_rows=300, method="permutation")
    assert ex.method == "permutation" and files == {}
    assert "requested (method='permutation')" in (ex.note or "")
    assert "model's own predictions" in (ex.note or "")
    assert next(iter(ex.global_importance)) == "signal"


def test_flights_model_is_explained_on_raw_columns_quickly() -> None:
    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.demo._quickstart import build_model

    flights = load_flights(months=[1])
    X, y = flights[list(FLIGHTS_FEATURES)], flights["delayed"]
    model = build_model().fit(X.iloc[:15000], y.iloc[:15000])
    start = time.perf_counter()
    ex, _ = explain(model, X.iloc[15000:], task="binary")
    seconds = time.perf_counter() - start
    print(f"explain on 500 flights rows: {seconds:.2f} s")
    assert ex.method == "shap" and ex.n_rows == 500
    assert set(ex.global_importance) == set(FLIGHTS_FEATURES)
    assert next(iter(ex.global_importance)) == "dep_delay"  # departure delay drives arrival delay
    assert seconds < 30, f"explain took {seconds:.1f} s on 500 rows"
