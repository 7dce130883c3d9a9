"""Explanations: SHAP values on raw input columns (strings included) rank a planted informative
feature above noise; shap's TreeExplainer and LinearExplainer where they explain the model exactly
(checked against the model's own output), the batched estimate with a note saying why elsewhere;
permutation importance with a note where SHAP cannot explain the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._explain import explain

OWN = "batched permutation Shapley estimate"
EXACT = "exact Shapley values"  # computed here, with at most 12 columns


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
    assert ex.method == "shap" and ex.n_rows == 500 and ex.output == "probability"
    assert ex.explainer == EXACT and ex.exact  # strings go through the encoder inside the model
    assert ex.note == (
        f"{EXACT} over all 2^4 = 16 sets of the 4 columns against 20 background rows: "
        "shap's explainers cannot take the string or categorical columns tier, city"
    )
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
    assert ex.explainer == "shap.LinearExplainer" and ex.output == "log-odds"
    assert ex.note == "shap.LinearExplainer explains the model's log-odds, not its probabilities"
    logits = model.decision_function(X)
    assert len(ex.local) == 3
    assert {e["class"] for e in ex.local} <= {0, 1, 2}
    for e in ex.local:
        total = sum(e["contributions"].values())
        assert total == pytest.approx(e["prediction"] - e["base_value"], abs=1e-9)
        assert e["prediction"] == pytest.approx(logits[e["row"], e["class"]], abs=1e-9)

    Xr, yr = load_diabetes(return_X_y=True, as_frame=True)
    reg = Ridge().fit(Xr, yr)
    ex_r, _ = explain(reg, Xr, task="regression", max_rows=100, n_local=2)
    # for a linear model the SHAP value of a feature is coef * (x - mean of the background)
    top = max(range(Xr.shape[1]), key=lambda j: abs(reg.coef_[j]) * Xr.iloc[:, j].std())
    assert next(iter(ex_r.global_importance)) == Xr.columns[top]
    assert ex_r.base_value is not None
    assert ex_r.explainer == "shap.LinearExplainer" and ex_r.output == "prediction"
    # exact: contribution = coef * (x - m) with one background mean m for every row, and the
    # base value is the model's output at m
    means = [
        [Xr.iloc[e["row"]][c] - e["contributions"][c] / reg.coef_[j] for e in ex_r.local]
        for j, c in enumerate(Xr.columns)
    ]
    assert all(max(m) - min(m) < 1e-9 for m in means)
    m = np.array([col[0] for col in means])
    assert ex_r.base_value == pytest.approx(float(reg.coef_ @ m + reg.intercept_), abs=1e-9)


def _numeric(n: int = 1000, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``signal`` drives both targets, ``weak`` a little, ``noise`` not at all."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {"signal": rng.normal(size=n), "noise": rng.normal(size=n), "weak": rng.normal(size=n)}
    )
    logit = 2.5 * X["signal"] + 0.5 * X["weak"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    y_reg = (3 * X["signal"] + X["weak"] + rng.normal(scale=0.3, size=n)).to_numpy()
    return X, y, y_reg


def _assert_exact(ex: Any, model: Any, X: pd.DataFrame, output: Any) -> None:
    """Planted ranking, and contributions + base value give the model's output on every row."""
    imp = ex.global_importance
    assert set(imp) == set(X.columns)
    assert next(iter(imp)) == "signal" and imp["signal"] > 5 * imp["noise"]
    assert len(ex.local) > 0
    for e in ex.local:
        total = sum(e["contributions"].values()) + e["base_value"]
        expected = float(np.ravel(output(X.iloc[[e["row"]]]))[0])
        assert e["prediction"] == pytest.approx(expected, abs=1e-6)
        assert total == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=40, max_depth=6, random_state=0),
        lambda: ExtraTreesClassifier(n_estimators=40, max_depth=6, random_state=0),
        lambda: GradientBoostingClassifier(n_estimators=50, random_state=0),
        lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
    ],
    ids=["random-forest", "extra-trees", "gradient-boosting", "decision-tree"],
)
def test_tree_classifiers_use_shap_tree_explainer_on_probabilities(make: Any) -> None:
    X, y, _ = _numeric()
    model = make().fit(X, y)
    ex, _ = explain(model, X, y, task="binary", max_rows=200, n_local=8)
    assert ex.method == "shap" and ex.explainer == "shap.TreeExplainer"
    assert ex.output == "probability" and ex.note is None and ex.n_rows == 200
    _assert_exact(ex, model, X, lambda f: model.predict_proba(f)[:, 1])


def test_tree_regressor_and_multiclass_forest_use_tree_explainer() -> None:
    X, _, y_reg = _numeric()
    reg = RandomForestRegressor(n_estimators=30, max_depth=6, random_state=0).fit(X, y_reg)
    ex, _ = explain(reg, X, task="regression", max_rows=200, n_local=5)
    assert ex.explainer == "shap.TreeExplainer" and ex.output == "prediction"
    _assert_exact(ex, reg, X, reg.predict)

    y3 = np.digitize(X["signal"] + 0.3 * X["weak"], [-0.5, 0.5])
    clf = RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0).fit(X, y3)
    ex3, _ = explain(clf, X, task="multiclass", max_rows=200, n_local=6)
    assert ex3.explainer == "shap.TreeExplainer" and ex3.base_value is None
    proba = clf.predict_proba(X)
    assert len(ex3.local) == 6
    for e in ex3.local:  # the predicted class's probability, decomposed
        assert e["class"] == int(np.argmax(proba[e["row"]]))
        total = sum(e["contributions"].values()) + e["base_value"]
        assert total == pytest.approx(proba[e["row"], e["class"]], abs=1e-6)


def test_numeric_pipeline_is_explained_through_its_final_model() -> None:
    X, y, y_reg = _numeric()
    X = X.copy()
    X.loc[::17, "weak"] = np.nan  # the imputer has work to do
    logit = Pipeline(
        [("impute", SimpleImputer()), ("scale", StandardScaler()), ("clf", LogisticRegression())]
    ).fit(X, y)
    ex, _ = explain(logit, X, y, task="binary", max_rows=200, n_local=6)
    assert ex.explainer == "shap.LinearExplainer" and ex.output == "log-odds"
    _assert_exact(ex, logit, X, logit.decision_function)

    forest = Pipeline(
        [("impute", SimpleImputer()), ("rf", RandomForestRegressor(n_estimators=20, max_depth=6))]
    ).fit(X, y_reg)
    ex_f, _ = explain(forest, X, task="regression", max_rows=200, n_local=6)
    assert ex_f.explainer == "shap.TreeExplainer"
    _assert_exact(ex_f, forest, X, forest.predict)


def test_nested_pipelines_booleans_and_nullable_integers_take_the_library_route() -> None:
    X, y, _ = _numeric()
    X = X.assign(
        flag=X["weak"] > 0,
        count=pd.array(np.arange(len(X)) % 5, dtype="Int64"),
    )
    X.loc[::50, "count"] = pd.NA
    nested = Pipeline(
        [
            ("impute", SimpleImputer()),
            ("inner", Pipeline([("skip", "passthrough"), ("scale", StandardScaler())])),
            ("clf", LogisticRegression()),
        ]
    ).fit(X.astype("float64"), y)
    ex, _ = explain(nested, X.astype("float64"), task="binary", max_rows=150, n_local=4)
    assert ex.explainer == "shap.LinearExplainer"
    _assert_exact(ex, nested, X.astype("float64"), nested.decision_function)

    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X, y)
    ex_f, _ = explain(forest, X, task="binary", max_rows=150, n_local=4)
    assert ex_f.explainer == "shap.TreeExplainer" and set(ex_f.global_importance) == set(X)
    _assert_exact(ex_f, forest, X, lambda f: forest.predict_proba(f)[:, 1])


def test_library_and_own_estimate_agree_and_the_note_says_why_shap_was_not_used() -> None:
    X, y, _ = _numeric()
    forest = RandomForestClassifier(n_estimators=40, max_depth=6, random_state=0).fit(X, y)
    lib, _ = explain(forest, X, task="binary", max_rows=300)
    # an identity step without output names: columns cannot be mapped, so the own route
    wrapped = Pipeline([("same", FunctionTransformer()), ("rf", forest)])
    own, _ = explain(wrapped, X, task="binary", max_rows=300)
    assert lib.explainer == "shap.TreeExplainer" and own.explainer == EXACT
    assert "do not keep the input columns one-to-one" in (own.note or "")
    assert lib.base_value == pytest.approx(own.base_value)  # the same background rows
    for c in X.columns:  # both exact over the same background rows: the same values
        # (to float32 precision: scikit-learn evaluates trees in float32)
        assert own.global_importance[c] == pytest.approx(lib.global_importance[c], abs=1e-7)

    # native categorical splits: shap's values would be wrong, so the own route
    Xc = X.assign(tier=np.random.default_rng(2).integers(0, 4, len(X)))
    hgb = HistGradientBoostingClassifier(max_iter=30, categorical_features=[3]).fit(Xc, y)
    ex, _ = explain(hgb, Xc, task="binary", max_rows=150, n_local=4)
    assert ex.explainer == EXACT and "native categorical splits" in (ex.note or "")
    _assert_exact(ex, hgb, Xc, lambda f: hgb.predict_proba(f)[:, 1])

    # a model shap has no exact explainer for
    _, _, y_reg = _numeric()
    poisson = PoissonRegressor().fit(X, np.exp(y_reg / 4))
    ex_p, _ = explain(poisson, X, task="regression", max_rows=150, n_local=4)
    assert ex_p.explainer == EXACT
    assert ex_p.note is not None
    assert ex_p.note.endswith(": shap has no exact, fast explainer for PoissonRegressor")
    _assert_exact(ex_p, poisson, X, poisson.predict)


def test_library_values_that_do_not_add_up_are_not_used() -> None:
    """A HistGradientBoosting classifier without categorical features is tried with
    shap.TreeExplainer on probabilities; its values are used only when they give the model's
    output (shap 0.51 with scikit-learn 1.9: they do not), else the own estimate explains the
    model and the note gives the gap."""
    X, y, _ = _numeric()
    hgb = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    ex, _ = explain(hgb, X, task="binary", max_rows=150, n_local=5)
    assert ex.explainer in ("shap.TreeExplainer", EXACT)
    if ex.explainer == EXACT:
        assert "shap.TreeExplainer's values do not add up to the model's output" in (ex.note or "")
    _assert_exact(ex, hgb, X, lambda f: hgb.predict_proba(f)[:, 1])

    # a regressor's values come from the trees' cover counts, which add up
    _, _, y_reg = _numeric()
    hgb_reg = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y_reg)
    ex_r, _ = explain(hgb_reg, X, task="regression", max_rows=150, n_local=5)
    assert ex_r.explainer == "shap.TreeExplainer" and ex_r.output == "prediction"
    _assert_exact(ex_r, hgb_reg, X, hgb_reg.predict)


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


def test_flights_model_is_explained_on_raw_columns() -> None:
    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.demo._quickstart import build_model

    flights = load_flights(months=[1])
    X, y = flights[list(FLIGHTS_FEATURES)], flights["delayed"]
    model = build_model().fit(X.iloc[:15000], y.iloc[:15000])
    ex, _ = explain(model, X.iloc[15000:], task="binary")
    assert ex.method == "shap" and ex.n_rows == 500 and ex.explainer == EXACT
    assert "cannot take the string or categorical columns" in (ex.note or "")
    assert set(ex.global_importance) == set(FLIGHTS_FEATURES)
    assert next(iter(ex.global_importance)) == "dep_delay"  # departure delay drives arrival delay
