"""The onnxruntime fast path: conversion, the agreement check, and every way it declines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin

from modelloop.models import ModelPackage, infer_signature, load_model, save_model
from modelloop.models._onnx import OnnxPredictor, try_onnx

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cancer(breast_cancer: tuple[pd.DataFrame, pd.Series]) -> tuple[pd.DataFrame, pd.Series]:
    return breast_cancer


@pytest.fixture(scope="module")
def forest(cancer: tuple[pd.DataFrame, pd.Series]):
    from sklearn.ensemble import RandomForestClassifier

    X, y = cancer
    return RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)


def _package(model, X: pd.DataFrame, path: Path = Path("/nonexistent")) -> ModelPackage:
    """A package in memory; ``path`` matters only when the input example is read from it."""
    return ModelPackage(model, infer_signature(X, model=model), {}, path)


def test_random_forest_from_saved_package_matches_sklearn(tmp_path, cancer, forest):
    X, _ = cancer
    path = save_model(forest, tmp_path / "rf", input_example=X.head(20))
    package = load_model(path)

    predictor, reason = try_onnx(package)  # check set = the saved input example

    assert reason == ""
    assert isinstance(predictor, OnnxPredictor)
    assert predictor.input_mode == "tensor"
    assert predictor.conversion_seconds > 0
    assert predictor.onnx_model[:2]  # the serialized model is kept for export
    frame = package.signature.validate(X)
    labels = predictor.predict(frame)
    assert labels.dtype == forest.classes_.dtype
    np.testing.assert_array_equal(labels, forest.predict(X))
    proba = predictor.predict_proba(frame)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba, forest.predict_proba(X), atol=1e-5)
    both_labels, both_proba = predictor.predict_both(frame.iloc[[3]])
    assert both_labels.tolist() == forest.predict(X.iloc[[3]]).tolist()
    np.testing.assert_allclose(both_proba, forest.predict_proba(X.iloc[[3]]), atol=1e-5)


def test_string_class_labels_come_back_as_the_classes(cancer):
    from sklearn.tree import DecisionTreeClassifier

    X, y = cancer
    names = np.array(["malignant", "benign", "zz-unused"])[y.to_numpy()]
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, names)

    predictor, reason = try_onnx(_package(tree, X), X)

    assert reason == ""
    got = predictor.predict(_package(tree, X).signature.validate(X))
    assert got.dtype == tree.classes_.dtype
    assert got.tolist() == tree.predict(X).tolist()
    assert set(got.tolist()) == {"malignant", "benign"}


def test_regressor_converts_and_agrees_within_tolerance():
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = LinearRegression().fit(X, y)
    package = _package(model, X)

    predictor, reason = try_onnx(package, X)

    assert reason == ""
    assert predictor.predict_proba(package.signature.validate(X)) is None
    got = predictor.predict(package.signature.validate(X))
    assert got.shape == (len(X),)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict(X), rtol=1e-5)


def test_mixed_string_and_numeric_inputs_use_one_input_per_column():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "distance": rng.normal(size=300),
            "carrier": pd.array(rng.choice(["AA", "UA", "DL"], 300), dtype="string"),
            "hour": rng.integers(5, 23, 300),
        }
    )
    y = ((X["distance"].to_numpy() + (X["carrier"] == "AA").to_numpy(bool)) > 0.3).astype(int)
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("num", "passthrough", ["distance", "hour"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["carrier"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(X, y)
    package = _package(model, X)

    predictor, reason = try_onnx(package, X.head(50))

    assert reason == ""
    assert predictor.input_mode == "columns"
    assert predictor.string_columns == frozenset({"carrier"})
    frame = package.signature.validate(X)
    np.testing.assert_array_equal(predictor.predict(frame), model.predict(X))
    np.testing.assert_allclose(predictor.predict_proba(frame), model.predict_proba(X), atol=1e-5)


def test_quickstart_style_pipeline_is_declined_with_a_reason():
    """HistGradientBoosting with native categorical features: skl2onnx cannot convert it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {
            "dep_time": rng.normal(size=200),
            "origin": pd.array(rng.choice(["EWR", "JFK", "LGA"], 200), dtype="string"),
        }
    )
    y = (X["dep_time"].to_numpy() > 0).astype(int)
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("num", "passthrough", ["dep_time"]),
                        ("cat", OrdinalEncoder(), ["origin"]),
                    ]
                ),
            ),
            ("clf", HistGradientBoostingClassifier(max_iter=5, categorical_features=[1])),
        ]
    ).fit(X, y)

    predictor, reason = try_onnx(_package(model, X), X.head(10))

    assert predictor is None
    # Depending on the converter's release it refuses native categorical splits, or converts
    # them wrongly; either way the form is declined, and the reason says which.
    text = str(reason)
    assert text.startswith("skl2onnx cannot convert Pipeline") or (
        "check rows differ" in text and "scikit-learn" in text and "onnxruntime" in text
    )


class _Shift(RegressorMixin, BaseEstimator):
    """A regressor no converter knows."""

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def test_unknown_estimator_returns_a_reason_not_an_exception(cancer):
    X, y = cancer
    model = _Shift().fit(X, y)

    predictor, reason = try_onnx(_package(model, X), X.head(5))

    assert predictor is None
    assert reason.startswith("skl2onnx cannot convert _Shift:")


def test_labels_flipped_by_float32_rounding_are_caught():
    """Rows on a logistic regression's decision boundary: float32 input flips some labels."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression().fit(X, (X["a"] + X["b"] > 0).astype(int))
    w, b = model.coef_[0], model.intercept_[0]
    a = rng.normal(size=500)
    on_boundary = pd.DataFrame(
        {"a": a, "b": -(b + w[0] * a) / w[1] + rng.normal(scale=1e-7, size=500)}
    )
    package = _package(model, X)

    predictor, reason = try_onnx(package, on_boundary, atol=1.0)  # only labels can fail

    assert predictor is None
    assert " of 500 check rows differ; first at row " in reason
    n_differ = int(reason.split(" of ")[0])
    assert n_differ > 0
    # away from the boundary the same model passes
    ok, why = try_onnx(package, X)
    assert why == ""
    assert ok is not None


def test_probabilities_outside_atol_are_caught(cancer, forest):
    X, _ = cancer

    predictor, reason = try_onnx(_package(forest, X), X, atol=0.0)

    assert predictor is None
    assert reason.startswith("probabilities differ by more than 0 on ")
    assert f"of {len(X)} check rows; first at row " in reason


@pytest.fixture(scope="module")
def cancer_with_nan(cancer) -> tuple[pd.DataFrame, pd.Series]:
    X, y = cancer
    X = X.iloc[:, :6].copy()
    X.loc[np.random.default_rng(0).random(len(X)) < 0.2, "mean radius"] = np.nan
    return X, y


def test_missing_values_are_checked_and_served_like_sklearn(cancer_with_nan):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer_with_nan
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(X, y)
    package = _package(model, X)

    # the check set has no NaN; try_onnx adds a row with "mean radius" missing
    predictor, reason = try_onnx(package, X.dropna().head(10))

    assert reason == ""
    frame = package.signature.validate(X)
    assert frame["mean radius"].isna().sum() > 50
    np.testing.assert_array_equal(predictor.predict(frame), model.predict(X))
    np.testing.assert_allclose(predictor.predict_proba(frame), model.predict_proba(X), atol=1e-5)


def test_missing_value_disagreement_is_caught_by_the_added_row(cancer_with_nan):
    """This forest's ONNX form routes NaN differently in some trees; the example hides it."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = cancer_with_nan
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    check = X.dropna().head(10)
    package = _package(model, X)

    predictor, reason = try_onnx(package, check)

    assert predictor is None
    assert "first at row 10 (added: row 0 with 'mean radius' missing)" in reason


def test_missing_skl2onnx_or_onnxruntime_is_a_reason(monkeypatch, cancer, forest):
    X, _ = cancer
    package = _package(forest, X)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "skl2onnx", None)  # import now raises ImportError
        assert try_onnx(package, X.head(5)) == (None, "skl2onnx is not installed")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnxruntime", None)
        assert try_onnx(package, X.head(5)) == (None, "onnxruntime is not installed")


def test_check_set_problems_are_reasons(tmp_path, cancer, forest):
    X, _ = cancer
    package = _package(forest, X, tmp_path)  # no input_example.json there

    assert try_onnx(package) == (
        None,
        "no check set: pass one or save the model with an input example",
    )
    assert try_onnx(package, X.head(0)) == (None, "the check set has no rows")
    predictor, reason = try_onnx(package, X.drop(columns=["mean radius"]).head(5))
    assert predictor is None
    assert reason.startswith("the check set does not fit the signature:")
    assert "mean radius" in reason
    bare = ModelPackage(forest, None, {}, tmp_path)
    assert try_onnx(bare, X.head(5)) == (
        None,
        "the package has no signature, so the ONNX inputs are unknown",
    )


def test_datetime_column_is_declined():
    from sklearn.dummy import DummyRegressor

    X = pd.DataFrame({"when": pd.date_range("2013-01-01", periods=5), "x": np.arange(5.0)})
    model = DummyRegressor().fit(X[["x"]], np.arange(5.0))

    predictor, reason = try_onnx(_package(model, X), X)

    assert predictor is None
    assert reason.startswith("column 'when' (datetime64[")
    assert reason.endswith(") has no ONNX input form here")


def test_masked_dtypes_with_missing_values_feed_as_nan():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "a": pd.array(rng.integers(0, 10, 300), dtype="Int64"),
            "b": pd.array(rng.random(300) > 0.5, dtype="boolean"),
            "c": rng.normal(size=300),
        }
    )
    X.loc[::7, "a"] = pd.NA
    y = ((X["c"] > 0) ^ X["b"].to_numpy(bool)).astype(int)
    model = make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=5, random_state=0))
    model.fit(X.astype("float64"), y)
    package = _package(model, X)

    predictor, reason = try_onnx(package, X)

    assert reason == ""
    assert predictor.input_mode == "tensor"
    frame = package.signature.validate(X)
    assert str(frame["a"].dtype) == "Int64"
    np.testing.assert_array_equal(predictor.predict(frame), model.predict(X))


def test_conversion_in_a_child_process_is_cached_and_used(tmp_path, cancer, forest):
    from modelloop.models._onnx import convert_in_subprocess, load_checked

    X, _ = cancer
    package = load_model(save_model(forest, tmp_path / "rf", input_example=X.head(20)))
    out = tmp_path / "cache" / "rf.onnx"

    assert convert_in_subprocess(package.path, out) == ("", False)
    assert out.is_file()
    stamp = out.stat().st_mtime_ns
    assert convert_in_subprocess(package.path, out) == ("", False)  # reused, not converted again
    assert out.stat().st_mtime_ns == stamp

    predictor, reason = try_onnx(package, blob=out.read_bytes())
    assert reason == "" and predictor is not None
    frame = package.signature.validate(X)
    np.testing.assert_array_equal(predictor.predict(frame), forest.predict(X))
    checked = load_checked(out, package.signature)  # what the server uses: no scikit-learn
    labels, proba = checked.predict_both(frame)
    np.testing.assert_array_equal(labels, forest.predict(X))
    np.testing.assert_allclose(proba, forest.predict_proba(X), atol=1e-5)


def test_child_conversion_failure_gives_the_reason(tmp_path, cancer):
    from sklearn.dummy import DummyClassifier

    from modelloop.models._onnx import convert_in_subprocess

    X, y = cancer
    model = DummyClassifier().fit(X, y)  # skl2onnx has no converter for it
    package = load_model(save_model(model, tmp_path / "dummy", input_example=X.head(5)))
    out = tmp_path / "dummy.onnx"
    reason, disagreed = convert_in_subprocess(package.path, out)
    assert not disagreed  # it cannot be converted at all
    assert "DummyClassifier" in reason
    assert not out.exists()
    marker = tmp_path / "dummy.onnx.failed"
    assert marker.read_text() == reason  # remembered: the next start does not try again
    assert convert_in_subprocess(package.path, out) == (reason, False)


def test_exact_probability_ties_keep_scikit_learns_first_class(cancer):
    """20 trees split 10/10 on some rows: scikit-learn's argmax gives class 0, while ONNX's
    float32 sums leave 0.49999994 against 0.50000006. Labels from probabilities treat such
    near-ties as ties, so the labels agree and the model converts."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = cancer
    X = X[["mean radius", "mean texture", "mean smoothness", "worst area", "worst concavity"]]
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    proba = model.predict_proba(X)
    ties = np.flatnonzero(proba[:, 0] == proba[:, 1])
    assert len(ties) > 0

    predictor, reason = try_onnx(_package(model, X), X)

    assert reason == ""
    assert predictor is not None and predictor.labels_from_proba
    frame = X.iloc[ties]
    labels, got = predictor.predict_both(frame)
    np.testing.assert_array_equal(labels, model.predict(frame))
    np.testing.assert_allclose(got, proba[ties], atol=1e-5)
    assert (got[:, 0] != got[:, 1]).any()  # the float32 sums really are not tied
