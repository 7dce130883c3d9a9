"""A HistGradientBoosting package's tree form: written by save_model only when it agrees with the
model bit for bit, predicted with NumPy alone (scikit-learn never imported), and refused whole
when its files are damaged or do not make a valid forest."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelloop.exceptions import ArtifactCorrupted
from modelloop.models import save_model
from modelloop.models._trees import TREES_FILE, TREES_META_FILE, TreeForm, _decoded


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100, 30, n)
    amount[rng.random(n) < 0.05] = np.nan  # the trees learn where a missing amount goes
    plan = rng.choice(
        np.array(["free", "pro", "team", np.nan], dtype=object), n, p=[0.4, 0.3, 0.27, 0.03]
    )
    return pd.DataFrame(
        {
            "amount": amount,
            "count": rng.integers(0, 40, n).astype("int64"),
            "city": rng.choice(["paris", "lyon", "nice", "lille", "metz"], n).tolist(),
            "plan": plan.tolist(),  # some missing: the signature admits them
        }
    )


def _labels(X: pd.DataFrame, classes: int) -> np.ndarray:
    score = np.nan_to_num(X["amount"].to_numpy(), nan=150) / 50 + X["count"] / 20
    score = score + X["city"].isin(["lyon", "metz"]).to_numpy(dtype=float) * 1.5
    score = score - (X["plan"] == "pro").fillna(False).to_numpy(dtype=float)
    return np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))


def _pipeline(estimator: Any, handle_unknown: str = "use_encoded_value") -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    options: dict[str, Any] = {"handle_unknown": handle_unknown, "encoded_missing_value": -1}
    if handle_unknown == "use_encoded_value":
        options["unknown_value"] = -1
    encode = ColumnTransformer(
        [
            ("num", "passthrough", ["amount", "count"]),
            ("cat", OrdinalEncoder(**options), ["city", "plan"]),
        ]
    )
    return Pipeline([("encode", encode), ("model", estimator)])


def _classifier(**kw: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=30, categorical_features=[2, 3], random_state=0, **kw
    )


def _saved(tmp_path: Path, model: Any, X: pd.DataFrame, **kw: Any) -> Path:
    return save_model(model, tmp_path / "pkg", training_data=X, input_example=X.head(5), **kw)


def _rows(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    """Fresh rows with some unseen and missing texts (the trees' own missing/unknown paths)."""
    X = _frame(n, seed)
    X.loc[X.index[::97], "city"] = "rouen"  # a city the model never saw
    X.loc[X.index[5::89], "plan"] = np.nan
    return X


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_a_classifier_pipeline_is_predicted_bit_for_bit(tmp_path: Path, classes: int) -> None:
    """Ten classes: the softmax sums more than eight terms (scikit-learn's column-major order
    matters), and some splits only part missing amounts from the rest (threshold +inf)."""
    X = _frame(3000 if classes > 3 else 1500, 0)
    model = _pipeline(_classifier()).fit(X, _labels(X, classes))
    folder = _saved(tmp_path, model, X)
    assert (folder / TREES_FILE).is_file() and (folder / TREES_META_FILE).is_file()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["tree_form"]["check_rows"] == 256

    form = TreeForm.load(folder)
    assert form is not None and form.n_trees == 30 * (1 if classes == 2 else classes)
    fresh = _rows()  # 3,000 rows: split between two threads
    labels, proba = form.predict(_decoded(fresh))
    expected = model.predict_proba(fresh)
    assert proba is not None and proba.dtype == expected.dtype
    assert np.array_equal(proba, expected)  # every bit
    assert np.array_equal(labels, model.predict(fresh))
    one_label, one = form.predict(_decoded(fresh.iloc[[3]]))  # the single-row path
    assert np.array_equal(one, model.predict_proba(fresh.iloc[[3]]))
    assert one_label[0] == labels[3]


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_a_regressor_on_numeric_columns_is_predicted_bit_for_bit(tmp_path: Path, loss: str) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = _frame(1200, 1)[["amount", "count"]]
    y = np.abs(np.nan_to_num(X["amount"].to_numpy(), nan=80) / 10 + X["count"].to_numpy() % 7)
    model = HistGradientBoostingRegressor(max_iter=25, loss=loss, random_state=0).fit(X, y)
    folder = _saved(tmp_path, model, X)
    form = TreeForm.load(folder)
    assert form is not None and not form.has_proba
    fresh = _frame(500, 9)[["amount", "count"]]
    values, proba = form.predict(_decoded(fresh))
    assert proba is None and np.array_equal(values, model.predict(fresh))


def test_a_split_on_missing_values_and_infinite_inputs(tmp_path: Path) -> None:
    """Where a missing value itself predicts the class, scikit-learn splits missing values off
    with a threshold of +inf; infinite inputs go where scikit-learn sends them."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.5).astype(int)
    a = rng.normal(size=2000)
    a[(y == 1) & (rng.random(2000) < 0.6)] = np.nan
    X = pd.DataFrame({"a": a, "b": rng.normal(size=2000)})
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)
    thresholds = [n["num_threshold"] for it in model._predictors for t in it for n in t.nodes]
    assert np.isposinf(thresholds).any()
    form = TreeForm.load(_saved(tmp_path, model, X))
    assert form is not None
    fresh = pd.DataFrame({"a": [np.nan, np.inf, -np.inf, 0.3, 5.0], "b": [0.1, np.inf, 0, 2, -1]})
    labels, proba = form.predict(_decoded(fresh))
    assert np.array_equal(proba, model.predict_proba(fresh))
    assert np.array_equal(labels, model.predict(fresh))


def test_a_value_the_encoder_refuses_is_refused_by_the_form_too(tmp_path: Path) -> None:
    X = _frame(800, 2)
    model = _pipeline(_classifier(), handle_unknown="error").fit(X, _labels(X, 2))
    form = TreeForm.load(_saved(tmp_path, model, X))
    assert form is not None
    rows = X.head(3).copy()
    rows.loc[rows.index[1], "city"] = "rouen"
    with pytest.raises(ValueError):  # what the pipeline does with this row
        model.predict_proba(rows)
    with pytest.raises(ValueError, match="'city' has an unseen one"):
        form.predict(_decoded(rows))
    assert np.array_equal(form.predict(_decoded(X.head(3)))[1], model.predict_proba(X.head(3)))


def test_other_models_and_unchecked_ones_get_no_form(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X = _frame(300, 3)
    forest = _pipeline(RandomForestClassifier(n_estimators=5, random_state=0))
    folder = save_model(forest.fit(X, _labels(X, 2)), tmp_path / "forest", training_data=X)
    assert not (folder / TREES_FILE).exists()
    assert "tree_form" not in json.loads((folder / "metadata.json").read_text())
    # a HistGradientBoosting model saved without rows to check it on: no form, and a warning
    model = _pipeline(_classifier()).fit(X, _labels(X, 2))
    from modelloop.models import infer_signature

    folder = save_model(model, tmp_path / "bare", signature=infer_signature(X))
    assert not (folder / TREES_FILE).exists()
    assert TreeForm.load(folder) is None


def _rewrite(folder: Path, arrays: dict[str, np.ndarray] | None = None, **meta: Any) -> None:
    """Replace the form's arrays or description and record their new digest, as a hand-made
    package would."""
    if arrays is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        (folder / TREES_FILE).write_bytes(buffer.getvalue())
    if meta:
        described = json.loads((folder / TREES_META_FILE).read_text())
        (folder / TREES_META_FILE).write_text(json.dumps({**described, **meta}))
    digest = hashlib.sha256(
        (folder / TREES_FILE).read_bytes() + b"\0" + (folder / TREES_META_FILE).read_bytes()
    ).hexdigest()
    package_meta = json.loads((folder / "metadata.json").read_text())
    package_meta["tree_form"]["sha256"] = digest
    (folder / "metadata.json").write_text(json.dumps(package_meta))


@pytest.fixture
def saved_form(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    X = _frame(600, 4)
    folder = _saved(tmp_path, _pipeline(_classifier()).fit(X, _labels(X, 2)), X)
    with np.load(folder / TREES_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return folder, arrays


def test_a_damaged_form_is_refused_by_its_digest(saved_form: Any) -> None:
    folder, _ = saved_form
    blob = bytearray((folder / TREES_FILE).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (folder / TREES_FILE).write_bytes(bytes(blob))
    with pytest.raises(ArtifactCorrupted, match="altered or truncated"):
        TreeForm.load(folder)


def _bad_child(a: dict[str, np.ndarray]) -> None:
    inner = np.flatnonzero(a["is_leaf"] == 0)
    a["left"][inner[3]] = inner[3]  # a loop: the walk would never end


def _bad_feature(a: dict[str, np.ndarray]) -> None:
    a["feature"][np.flatnonzero(a["is_leaf"] == 0)[0]] = 99


def _bad_bitset(a: dict[str, np.ndarray]) -> None:
    cat = np.flatnonzero((a["is_categorical"] == 1) & (a["is_leaf"] == 0))
    a["bitset"][cat[0]] = len(a["left_bitsets"])


def _bad_threshold(a: dict[str, np.ndarray]) -> None:
    num = np.flatnonzero((a["is_categorical"] == 0) & (a["is_leaf"] == 0))
    a["threshold"][num[0]] = np.nan


def _short(a: dict[str, np.ndarray]) -> None:
    a["value"] = a["value"][:-1]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_bad_child, "does not follow its node"),
        (_bad_feature, "names a column"),
        (_bad_bitset, "bitset that does not exist"),
        (_bad_threshold, "numeric split has no threshold"),
        (_short, "differ in length"),
    ],
)
def test_arrays_that_are_not_a_valid_forest_are_refused(
    saved_form: Any, damage: Any, words: str
) -> None:
    folder, arrays = saved_form
    damage(arrays)
    _rewrite(folder, arrays)
    with pytest.raises(ArtifactCorrupted, match=words):
        TreeForm.load(folder)


def test_a_form_holding_objects_is_refused_without_unpickling(saved_form: Any) -> None:
    folder, arrays = saved_form
    arrays["classes"] = np.array([0, "x"], dtype=object)  # np.load would need pickle
    _rewrite(folder, arrays)
    with pytest.raises(ArtifactCorrupted, match="unreadable"):
        TreeForm.load(folder)


def test_a_compressed_or_oversized_array_is_refused_before_it_is_read(saved_form: Any) -> None:
    folder, arrays = saved_form
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # a small file could inflate to any size
    (folder / TREES_FILE).write_bytes(buffer.getvalue())
    _rewrite(folder)
    with pytest.raises(ArtifactCorrupted, match="compressed"):
        TreeForm.load(folder)
    # an entry whose header claims a billion values (8 GB) but holds a few bytes
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            entry = io.BytesIO()
            if name == "value":
                header = {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
                np.lib.format.write_array_header_1_0(entry, header)
                entry.write(b"\0" * 64)
            else:
                np.lib.format.write_array(entry, array)
            archive.writestr(f"{name}.npy", entry.getvalue())
    (folder / TREES_FILE).write_bytes(raw.getvalue())
    _rewrite(folder)
    with pytest.raises(ArtifactCorrupted, match="more than its entry"):
        TreeForm.load(folder)


@pytest.mark.parametrize(
    "described",
    [
        {"trees_per_iteration": 0},
        {"link": "softmax"},  # two classes, one tree an iteration
        {"link": "identity"},  # a regression link with classes
        {"columns": []},
    ],
)
def test_an_inconsistent_description_is_refused(saved_form: Any, described: dict) -> None:
    folder, _ = saved_form
    _rewrite(folder, **described)
    with pytest.raises(ArtifactCorrupted, match="inconsistent"):
        TreeForm.load(folder)


def test_a_form_that_does_not_fit_the_signature_is_refused(saved_form: Any) -> None:
    from modelloop.models._package import read_signature

    folder, _ = saved_form
    form = TreeForm.load(folder)
    assert form is not None
    form.check_signature(read_signature(folder))  # its own: fine
    columns = json.loads((folder / TREES_META_FILE).read_text())["columns"]
    columns[0]["name"] = "zzz"
    _rewrite(folder, columns=columns)
    renamed = TreeForm.load(folder)
    assert renamed is not None
    with pytest.raises(ArtifactCorrupted, match="'zzz' the model lacks"):
        renamed.check_signature(read_signature(folder))


def test_an_unknown_link_is_refused(saved_form: Any) -> None:
    folder, _ = saved_form
    _rewrite(folder, link="cube")
    with pytest.raises(ArtifactCorrupted, match="unknown link 'cube'"):
        TreeForm.load(folder)


def test_predicting_a_form_never_imports_scikit_learn(saved_form: Any) -> None:
    folder, _ = saved_form
    rows = _decoded(_rows(50))
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from modelloop.models._trees import TreeForm\n"
        f"form = TreeForm.load(Path({str(folder)!r}))\n"
        "labels, proba = form.predict(json.loads(sys.stdin.read()))\n"
        "print(json.dumps({'sklearn': any(m.startswith('sklearn') for m in sys.modules),\n"
        "                  'skops': 'skops' in sys.modules, 'proba': proba.tolist()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(out.stdout)
    assert answer["sklearn"] is False and answer["skops"] is False
    from modelloop.models import load_model

    package = load_model(folder)
    expected = package.model.predict_proba(package.signature.validate(_rows(50)))
    assert answer["proba"] == expected.tolist()  # JSON floats round-trip exactly
