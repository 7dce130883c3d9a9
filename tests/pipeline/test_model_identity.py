"""A retrained model that the registry already holds is not registered again (issue 18, item 7):
the same fitted state and the same outputs make a duplicate, whatever parameters only bounded
training; a parameter read when predicting keeps two models apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer
from typer.testing import CliRunner

from modelloop.pipeline import Pipeline
from modelloop.pipeline._identity import FITTED_TAG, fitted_digest, same_behaviour

EARLY_STOPPING = {
    "max_iter": 200,
    "early_stopping": True,
    "n_iter_no_change": 3,
    "validation_fraction": 0.2,
    "random_state": 0,
}


def _cancer_xy(csv: Path, features: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(csv)
    return frame[features], frame["label"]


def test_training_budget_parameters_that_did_not_bind_leave_the_fitted_state_alone(
    cancer_csv: Path, cancer_spec: dict[str, Any]
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _cancer_xy(cancer_csv, cancer_spec["features"])
    a = HistGradientBoostingClassifier(**EARLY_STOPPING).fit(X, y)
    b = HistGradientBoostingClassifier(**{**EARLY_STOPPING, "max_iter": 150}).fit(X, y)
    assert a.n_iter_ == b.n_iter_ < 150  # early stopping ended both before either budget
    assert fitted_digest(a) == fitted_digest(b)
    assert same_behaviour(a, b, X)
    c = HistGradientBoostingClassifier(**{**EARLY_STOPPING, "max_iter": a.n_iter_ - 2}).fit(X, y)
    assert fitted_digest(c) != fitted_digest(a)
    assert not same_behaviour(a, c, X)


def test_a_parameter_read_when_predicting_tells_two_models_apart(
    cancer_csv: Path, cancer_spec: dict[str, Any]
) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    X, y = _cancer_xy(cancer_csv, cancer_spec["features"])
    k3 = KNeighborsClassifier(n_neighbors=3).fit(X, y)
    k9 = KNeighborsClassifier(n_neighbors=9).fit(X, y)
    assert fitted_digest(k3) == fitted_digest(k9)  # the fit only stores the rows
    assert not same_behaviour(k3, k9, X)

    # how unseen categories are handled is read only when transforming: the probe rows hold one
    Xc = X.assign(size=pd.read_csv(cancer_csv)["size"])

    def model(handle: str) -> Any:
        encode = ColumnTransformer(
            [
                ("num", "passthrough", cancer_spec["features"]),
                ("cat", OrdinalEncoder(handle_unknown=handle, unknown_value=-1), ["size"])
                if handle == "use_encoded_value"
                else ("cat", OrdinalEncoder(handle_unknown=handle), ["size"]),
            ]
        )
        return make_pipeline(encode, LogisticRegression(max_iter=2000)).fit(Xc, y)

    strict, lenient = model("error"), model("use_encoded_value")
    assert np.array_equal(strict.predict_proba(Xc), lenient.predict_proba(Xc))
    assert not same_behaviour(strict, lenient, Xc)
    assert same_behaviour(strict, model("error"), Xc)


def test_the_same_fitted_model_is_not_registered_again(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    from modelloop import Client, Settings

    cancer_spec["model"]["params"] = dict(EARLY_STOPPING)
    cancer_spec["explain"] = {"enabled": False}
    path = write_spec(cancer_spec)

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(
            cli, ["pipeline", "run", str(path), "--json", *args], catch_exceptions=False
        )
        return result.exit_code, json.loads(result.stdout)

    code, first = run()
    assert code == 0 and first["registered_version"] == 1
    code, same = run("--set", "model.params.max_iter=150")
    assert code == 0
    assert same["status"] == "unchanged" and same["duplicate_of"] == 1
    assert same["registered_version"] is None and same["alias_moved"] is False
    assert "cancer v1 again" in same["reason"] and "nothing registered" in same["reason"]
    assert not same["steps"][3]["cache_hit"]  # the model was trained again (train is step 4)
    client = Client(Settings.from_env())
    try:
        assert [mv.version for mv in client.list_model_versions("cancer")] == [1]
        assert client.resolve("models:/cancer@champion").version == 1
        parent = client.get_run(same["run_id"])
        assert parent.tags["modelloop.pipeline_status"] == "unchanged"
        assert parent.tags["modelloop.duplicate_of"] == "1"
        v1 = client.get_model_version("cancer", 1)
        train = client.get_run(first["steps"][3]["run_id"])
        package = client.load_model(f"runs:/{train.run_id}/model")
        assert v1.tags[FITTED_TAG] == fitted_digest(package.model)
    finally:
        client.close()
    # the plain summary says so
    text = CliRunner().invoke(
        cli, ["pipeline", "run", str(path), "--set", "model.params.max_iter=150"]
    )
    assert text.exit_code == 0
    assert "nothing registered" in text.stdout and "cancer v1 again" in " ".join(
        text.stdout.split()
    )
    # a model that did change is registered as usual
    code, other = run("--set", "model.params.learning_rate=0.05")
    assert code == 0 and other["status"] == "registered" and other["registered_version"] == 2


def test_a_register_change_over_a_cached_model_does_not_copy_the_version(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["explain"] = {"enabled": False}
    first = Pipeline(cancer_spec, base_dir=cancer_csv.parent).run(client)
    assert first.registered_version == 1
    spec = {**cancer_spec, "register": {**cancer_spec["register"], "tags": {"team": "x"}}}
    again = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    assert again.step("train").cache_hit and not again.step("register").cache_hit
    assert again.status == "unchanged" and again.duplicate_of == 1
    assert len(client.list_model_versions("cancer")) == 1
