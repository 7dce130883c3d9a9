"""Shapley values computed by the pipeline itself (issue 18, items 4 and 5): exact with at most 12
columns, equal to ``shap.ExactExplainer`` on a numeric model and on the flights model's string
columns; an estimate with its standard error stated beyond 12 columns; ``explanation.json``
lists importance largest first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelloop.pipeline._explain import EXACT_MAX_FEATURES, exact_shapley_values, explain

shap = pytest.importorskip("shap")


def _exact_explainer_values(f: Any, X: pd.DataFrame, background: pd.DataFrame) -> np.ndarray:
    masker = shap.maskers.Independent(background, max_samples=len(background))
    return np.asarray(shap.ExactExplainer(f, masker)(X).values)


def test_exact_values_equal_shap_exact_explainer_on_a_numeric_model() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :6]
    model = KNeighborsClassifier(n_neighbors=7).fit(X, y)  # no fast shap explainer for it
    rows = X.iloc[::19].reset_index(drop=True)  # 30 rows

    def f(frame: Any) -> np.ndarray:
        return model.predict_proba(pd.DataFrame(np.asarray(frame), columns=X.columns))[:, 1]

    # through explain(): every row explained, every row the background
    ex, _ = explain(
        model, rows, task="binary", max_rows=len(rows), n_local=len(rows), background_rows=30
    )
    assert ex.explainer == "exact Shapley values" and ex.exact is True and ex.error is None
    assert ex.background_rows == list(range(len(rows)))
    expected = _exact_explainer_values(f, rows.to_numpy(), rows.to_numpy())
    assert len(ex.local) == len(rows)
    for entry in ex.local:
        got = np.array([entry["contributions"][c] for c in X.columns])
        np.testing.assert_allclose(got, expected[entry["row"]], rtol=0, atol=1e-6)
    # the function itself, with a background apart from the rows
    phi, out, base = exact_shapley_values(f, rows.iloc[:5], X.iloc[-12:])
    direct = _exact_explainer_values(f, rows.iloc[:5].to_numpy(), X.iloc[-12:].to_numpy())
    np.testing.assert_allclose(phi, direct, rtol=0, atol=1e-6)
    np.testing.assert_allclose(phi.sum(axis=1) + base, out, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def flights_model() -> tuple[Any, pd.DataFrame]:
    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.demo._quickstart import build_model

    flights = load_flights(months=[1]).sample(3000, random_state=0).reset_index(drop=True)
    X, y = flights[list(FLIGHTS_FEATURES)], flights["delayed"]
    model = build_model().set_params(clf__max_iter=30).fit(X.iloc[:2500], y.iloc[:2500])
    return model, X.iloc[2500:].reset_index(drop=True)


def _coded(model: Any, X: pd.DataFrame) -> tuple[Any, np.ndarray, list[list[Any]]]:
    """The model as a function of numbers (string columns as codes, for shap) and the codes."""
    columns = list(X.columns)
    numeric = {c: pd.api.types.is_numeric_dtype(X[c]) for c in columns}
    levels = [[] if numeric[c] else sorted(X[c].unique()) for c in columns]
    codes = np.column_stack(
        [
            X[c].map({v: i for i, v in enumerate(lv)}).to_numpy(float) if lv else X[c].to_numpy()
            for c, lv in zip(columns, levels, strict=True)
        ]
    )

    def f(Z: np.ndarray) -> np.ndarray:
        data = {}
        for j, (c, lv) in enumerate(zip(columns, levels, strict=True)):
            col = Z[:, j]
            data[c] = np.asarray(lv, dtype=object)[col.astype(int)] if lv else col
        frame = pd.DataFrame(data).astype({c: X[c].dtype for c in columns})
        return model.predict_proba(frame)[:, 1]

    return f, codes, levels


def test_exact_values_on_the_flights_models_string_columns(flights_model) -> None:
    model, X = flights_model
    rows = X.iloc[:24]
    ex, _ = explain(
        model, rows, task="binary", max_rows=24, n_local=24, background_rows=16, random_state=3
    )
    assert ex.explainer == "exact Shapley values"
    assert "2^7 = 128 sets of the 7 columns against 16 background rows" in (ex.note or "")
    assert "cannot take the string or categorical columns carrier, origin, dest" in ex.note
    f, codes, _ = _coded(model, rows)
    expected = _exact_explainer_values(f, codes, codes[ex.background_rows])
    for entry in ex.local:
        got = np.array([entry["contributions"][c] for c in rows.columns])
        np.testing.assert_allclose(got, expected[entry["row"]], rtol=0, atol=1e-6)


def test_beyond_twelve_columns_an_estimate_with_its_standard_error() -> None:
    rng = np.random.default_rng(0)
    n, m = 120, EXACT_MAX_FEATURES + 2
    X = pd.DataFrame(rng.normal(size=(n, m)), columns=[f"x{i}" for i in range(m)])
    X["tier"] = rng.choice(["a", "b", "c"], n)  # a string column: not shap's route
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    y = (X["x0"] + 0.5 * X["x1"] * X["x2"] + (X["tier"] == "a") > 0).astype(int)
    encode = ColumnTransformer([("cat", OneHotEncoder(), ["tier"])], remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression(max_iter=1000)).fit(X, y)
    ex, _ = explain(model, X, task="binary", max_rows=60, n_local=5)
    assert ex.explainer == "batched permutation Shapley estimate" and ex.exact is False
    error = ex.error
    assert error is not None and error["kind"] == "standard error" and error["pairs"] == 4
    assert 0 < error["mean"] <= error["max"] and 0 < error["relative"] < 1
    assert "15 columns: more than 12 for exact values" in (ex.note or "")
    assert "standard error of a value: mean" in ex.note
    # the stated error is honest: exact values on a few rows lie within a few standard errors
    f = lambda frame: model.predict_proba(frame)[:, 1]  # noqa: E731
    background = X.iloc[ex.background_rows].reset_index(drop=True)
    for entry in ex.local[:2]:
        row = X.iloc[[entry["row"]]].reset_index(drop=True)
        exact, _, _ = exact_shapley_values(f, row, background)
        got = np.array([entry["contributions"][c] for c in X.columns])
        assert np.abs(got - exact[0]).max() <= 6 * error["max"] + 1e-12


def test_explanation_json_lists_importance_largest_first(client: Any) -> None:
    from modelloop.pipeline import Pipeline

    example = Path(__file__).resolve().parents[2] / "examples" / "flights" / "modelloop.yaml"
    quick = {
        "data.args.sample": 2000,
        "model.params.max_iter": 20,
        "tune.enabled": False,
        "explain.max_rows": 40,
        "explain.n_local": 3,
        "gates": ["auc >= 0.5"],
    }
    result = Pipeline.from_file(example, quick).run(client)
    run_id = result.step("explain").run_id
    items = {a.path: a for a in client.list_artifacts(run_id)}
    text = client.artifacts.read_bytes(items["outputs/explanation.json"].digest)
    stored = json.loads(text)
    values = list(stored["global_importance"].values())
    assert values == sorted(values, reverse=True)
    assert next(iter(stored["global_importance"])) == "dep_delay"
    assert stored["explainer"] == "exact Shapley values" and stored["exact"] is True
