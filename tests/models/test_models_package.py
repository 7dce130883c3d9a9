"""Saving and loading model packages: round trips, metadata, integrity and atomic writes."""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from modelloop.exceptions import (
    ArtifactCorrupted,
    Conflict,
    InvalidInput,
    NotFound,
    SchemaMismatch,
    UnsafeArtifact,
)
from modelloop.models import ModelPackage, Signature, infer_signature, load_model, save_model


class RunsCodeWhenUnpickled:
    """A pickle payload that creates ``marker`` if anyone unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _ct_pipeline() -> Pipeline:
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    prep = ColumnTransformer(
        [
            ("num", numeric, ["mean radius", "mean texture", "mean smoothness"]),
            ("cat", categorical, ["size", "shape"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))])


def _with_categoricals(X: pd.DataFrame) -> pd.DataFrame:
    out = X[["mean radius", "mean texture", "mean smoothness"]].copy()
    out["size"] = np.where(X["mean area"] > 600, "large", "small")
    out["shape"] = pd.Categorical(np.where(X["mean concavity"] > 0.06, "irregular", "round"))
    out.loc[::13, "mean texture"] = np.nan
    return out


CASES = {
    "random_forest": (lambda: RandomForestClassifier(n_estimators=10, random_state=0), "cancer"),
    "logistic_regression": (
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "wine",
    ),
    "hist_gradient_boosting": (
        lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
        "wine",
    ),
    "column_transformer_pipeline": (_ct_pipeline, "cancer_mixed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_gives_identical_predictions(case, cancer, wine, tmp_path) -> None:
    make, data = CASES[case]
    X, y = wine if data == "wine" else cancer
    if data == "cancer_mixed":
        X = _with_categoricals(X)
    model = make().fit(X, y)

    path = save_model(model, tmp_path / "pkg", input_example=X.head(5))
    pkg = load_model(path)

    assert isinstance(pkg, ModelPackage) and pkg.path == path
    assert type(pkg.model) is type(model)
    np.testing.assert_array_equal(pkg.model.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(pkg.predict(X), model.predict(X))
    np.testing.assert_allclose(pkg.predict_proba(X), model.predict_proba(X), rtol=1e-12, atol=0)
    records = X.head(3).astype(object).where(X.head(3).notna(), None).to_dict("records")
    np.testing.assert_array_equal(pkg.predict(records), model.predict(X.head(3)))
    assert pkg.signature is not None
    assert pkg.signature.task == "classification"
    assert list(pkg.signature.classes or ()) == sorted(set(y.tolist()))


def test_nullable_int_with_missing_values_end_to_end(mixed, tmp_path) -> None:
    X, y = mixed
    prep = ColumnTransformer(
        [("city", OrdinalEncoder(), ["city"])],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = Pipeline(
        [
            ("prep", prep),
            (
                "hgb",
                HistGradientBoostingClassifier(
                    max_iter=30, categorical_features="from_dtype", random_state=0
                ),
            ),
        ]
    ).fit(X, y)

    pkg = load_model(save_model(model, tmp_path / "pkg", input_example=X.head(20)))

    age = next(c for c in pkg.signature.inputs if c.name == "age")
    assert (age.dtype, age.nullable) == ("Int64", True)
    rows = X.head(30)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    assert any(r["age"] is None for r in records)  # pd.NA travels as JSON null
    assert pkg.signature.validate(records)["age"].dtype == pd.Int64Dtype()
    np.testing.assert_array_equal(pkg.predict(records), model.predict(rows))
    np.testing.assert_array_equal(pkg.predict(X), model.predict(X))
    with pytest.raises(SchemaMismatch, match="'color'") as info:
        pkg.predict([{**records[0], "color": "purple"}])
    assert info.value.column == "color"


def test_package_files_and_metadata(cancer, tmp_path) -> None:
    X, y = cancer
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    example = X.head(4).copy()
    example.iloc[1, 0] = np.nan
    path = save_model(
        model,
        tmp_path / "pkg",
        input_example=example,
        metadata={"run_id": "a" * 32, "dataset_digest": "sha256:abc"},
    )

    assert sorted(p.name for p in path.iterdir()) == [
        "input_example.json",
        "metadata.json",
        "model.skops",
        "signature.json",
    ]
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["format_version"] == 1
    assert meta["serialization"] == "skops" and meta["model_file"] == "model.skops"
    assert meta["model_sha256"] == hashlib.sha256((path / "model.skops").read_bytes()).hexdigest()
    assert meta["flavor"] == "sklearn"
    assert meta["model_class"] == "sklearn.ensemble._forest.RandomForestClassifier"
    assert isinstance(meta["created_at"], int) and meta["created_at"] > 1_600_000_000_000
    assert set(meta["libraries"]) == {
        "python",
        "scikit-learn",
        "numpy",
        "pandas",
        "skops",
        "modelloop",
    }
    assert meta["run_id"] == "a" * 32 and meta["dataset_digest"] == "sha256:abc"

    rows = json.loads((path / "input_example.json").read_text())
    assert len(rows) == 4 and rows[1]["mean radius"] is None
    assert rows[0]["mean radius"] == float(X.iloc[0, 0])
    sig = Signature.from_json((path / "signature.json").read_text())
    assert sig == infer_signature(example, model.predict(example), model=model)
    assert sig.outputs[0].dtype == "int64"

    pkg = load_model(path)
    assert pkg.metadata["run_id"] == "a" * 32
    with pytest.raises(TypeError):
        pkg.metadata["run_id"] = "changed"  # type: ignore[index]


def test_save_without_example_has_no_signature(diabetes, tmp_path) -> None:
    X, y = diabetes
    model = Ridge().fit(X, y)
    pkg = load_model(save_model(model, tmp_path / "pkg"))
    assert pkg.signature is None
    np.testing.assert_array_equal(pkg.predict(X), model.predict(X))
    with pytest.raises(InvalidInput, match="probabilities"):
        pkg.predict_proba(X)


def test_save_with_explicit_signature_checks_the_example(cancer, tmp_path) -> None:
    X, y = cancer
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    sig = infer_signature(X.iloc[:, :2], y, model=model)
    with pytest.raises(SchemaMismatch, match="mean texture"):
        save_model(model, tmp_path / "pkg", signature=sig, input_example=X.iloc[:, :1])
    assert not (tmp_path / "pkg").exists()
    pkg = load_model(save_model(model, tmp_path / "ok", signature=sig))
    assert pkg.signature == sig


def test_reserved_metadata_keys_are_refused(cancer, tmp_path) -> None:
    X, y = cancer
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    with pytest.raises(InvalidInput, match="model_sha256"):
        save_model(model, tmp_path / "pkg", metadata={"model_sha256": "0" * 64})
    with pytest.raises(InvalidInput, match="JSON"):
        save_model(model, tmp_path / "pkg2", metadata={"when": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


def test_save_refuses_non_empty_directory_and_accepts_empty_one(cancer, tmp_path) -> None:
    X, y = cancer
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="busy"):
        save_model(model, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    existing = save_model(model, tmp_path / "pkg")
    with pytest.raises(Conflict):
        save_model(model, existing)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(Conflict):
        save_model(model, tmp_path / "a_file")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert save_model(model, empty) == empty
    assert (empty / "model.skops").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "busy", "empty", "pkg"]


def test_failed_save_leaves_nothing_behind(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="pickle"):
        save_model({"lock": threading.Lock()}, tmp_path / "pkg", serialization="pickle")
    assert list(tmp_path.iterdir()) == []


def test_tampered_skops_file_is_refused(cancer, tmp_path) -> None:
    X, y = cancer
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    path = save_model(model, tmp_path / "pkg")
    blob = bytearray((path / "model.skops").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "model.skops").write_bytes(bytes(blob))
    with pytest.raises(ArtifactCorrupted, match="sha256"):
        load_model(path)


def test_truncated_or_missing_files_are_corruption(cancer, tmp_path) -> None:
    X, y = cancer
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    a = save_model(model, tmp_path / "a", input_example=X.iloc[:3, :2])
    (a / "model.skops").write_bytes((a / "model.skops").read_bytes()[:100])
    with pytest.raises(ArtifactCorrupted):
        load_model(a)
    b = save_model(model, tmp_path / "b")
    (b / "metadata.json").unlink()
    with pytest.raises(ArtifactCorrupted, match=r"metadata\.json"):
        load_model(b)
    c = save_model(model, tmp_path / "c", input_example=X.iloc[:3, :2])
    (c / "signature.json").write_text("{broken")
    with pytest.raises(ArtifactCorrupted, match="signature"):
        load_model(c)
    with pytest.raises(NotFound):
        load_model(tmp_path / "nowhere")


# -- pickle: opt-in only, digest checked before anything is unpickled --------------------------


def _pickle_package(tmp_path: Path, cancer) -> tuple[Path, LogisticRegression]:
    X, y = cancer
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    path = save_model(model, tmp_path / "pkg", serialization="pickle")
    return path, model


def test_pickle_refused_without_opt_in(cancer, tmp_path) -> None:
    path, _ = _pickle_package(tmp_path, cancer)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(RunsCodeWhenUnpickled(marker))
    (path / "model.pkl").write_bytes(payload)
    meta = json.loads((path / "metadata.json").read_text())
    meta["model_sha256"] = hashlib.sha256(payload).hexdigest()  # a consistent, hostile package
    (path / "metadata.json").write_text(json.dumps(meta))

    with pytest.raises(UnsafeArtifact, match="allow_pickle"):
        load_model(path)
    assert not marker.exists()


def test_pickle_accepted_with_opt_in(cancer, tmp_path) -> None:
    path, model = _pickle_package(tmp_path, cancer)
    X, _ = cancer
    assert (path / "model.pkl").is_file() and not (path / "model.skops").exists()
    assert json.loads((path / "metadata.json").read_text())["serialization"] == "pickle"
    pkg = load_model(path, allow_pickle=True)
    np.testing.assert_array_equal(pkg.predict(X.iloc[:, :2]), model.predict(X.iloc[:, :2]))


def test_altered_pickle_refused_before_unpickling_even_with_opt_in(cancer, tmp_path) -> None:
    path, _ = _pickle_package(tmp_path, cancer)
    marker = tmp_path / "unpickled"
    (path / "model.pkl").write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker)))
    with pytest.raises(ArtifactCorrupted, match="sha256"):
        load_model(path, allow_pickle=True)
    assert not marker.exists()


def test_model_file_name_never_comes_from_metadata(cancer, tmp_path) -> None:
    path, _ = _pickle_package(tmp_path, cancer)
    meta = json.loads((path / "metadata.json").read_text())
    meta["model_file"] = "../../etc/passwd"
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactCorrupted, match="model file"):
        load_model(path, allow_pickle=True)


def _plan_model() -> tuple[Pipeline, pd.DataFrame]:
    """A classifier over a few-valued string column ('plan') and a number, fitted on 300 rows."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"plan": rng.choice(["free", "pro", "team"], 300), "x": rng.normal(size=300)})
    y = ((X["plan"] == "pro") ^ (X["x"] > 0)).astype(int)
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]), ("num", "passthrough", ["x"])]
    )
    return make_pipeline(prep, LogisticRegression()).fit(X, y), X


@pytest.mark.parametrize("unseen", ["refuse", "accept"])
def test_training_data_gives_categories_that_loaded_predict_enforces(
    tmp_path: Path, unseen: str
) -> None:
    model, X = _plan_model()
    path = save_model(
        model,
        tmp_path / "pkg",
        input_example=X.head(5),
        training_data=X,
        unseen=unseen,  # type: ignore[arg-type]
    )
    stored = json.loads((path / "signature.json").read_text())
    assert stored["inputs"][0]["categories"] == ["free", "pro", "team"]
    assert stored["inputs"][0]["unseen"] == unseen
    assert stored["outputs"][0]["dtype"] == "int64"  # outputs still come from predictions
    pkg = load_model(path)
    unknown = {"plan": ["pro", "gold"], "x": [0.5, -0.5]}
    if unseen == "refuse":
        with pytest.raises(SchemaMismatch, match=r"'plan'.*row 1.*'gold'"):
            pkg.predict(unknown)
    else:  # served as the model would take it: one-hot all zeros
        assert pkg.predict(unknown).tolist() == model.predict(pd.DataFrame(unknown)).tolist()
    assert pkg.predict(X.head(4)).tolist() == model.predict(X.head(4)).tolist()


def test_input_example_alone_gives_no_categories(tmp_path: Path) -> None:
    model, X = _plan_model()
    pkg = load_model(save_model(model, tmp_path / "pkg", input_example=X.head(5)))
    assert pkg.signature is not None and pkg.signature.inputs[0].categories is None
    assert pkg.predict({"plan": ["gold"], "x": [0.1]}).shape == (1,)


def test_signature_and_training_data_together_are_refused(tmp_path: Path) -> None:
    model, X = _plan_model()
    with pytest.raises(InvalidInput, match="either a signature"):
        save_model(model, tmp_path / "pkg", signature=infer_signature(X), training_data=X)
    assert not (tmp_path / "pkg").exists()
