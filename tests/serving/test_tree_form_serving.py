"""``modelloop serve`` and a package's tree form, over real HTTP: the form answers (scikit-learn
never mapped into the server), refuses what the model refuses with the same status, and a form
that is not a valid forest is set aside with a warning while scikit-learn answers instead."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_support import register, start_server

from modelloop._client import Client
from modelloop._config import Settings


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(100, 30, n),
            "seats": rng.integers(1, 50, n).astype("int64"),
            "city": rng.choice(["paris", "lyon", "nice", "metz"], n).tolist(),
        }
    )


def _model(X: pd.DataFrame) -> Any:
    """An HistGradientBoosting pipeline whose encoder refuses cities it did not see."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    y = ((X["amount"] > 100) ^ X["city"].isin(["lyon", "metz"])).astype(int)
    encode = ColumnTransformer(
        [
            ("num", "passthrough", ["amount", "seats"]),
            ("cat", OrdinalEncoder(handle_unknown="error"), ["city"]),
        ]
    )
    clf = HistGradientBoostingClassifier(max_iter=25, categorical_features=[2], random_state=0)
    return Pipeline([("encode", encode), ("clf", clf)]).fit(X, y)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"amount": float(a), "seats": int(s), "city": str(c)}
        for a, s, c in frame.itertuples(index=False)
    ]


def _runtime(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=10).json()["models"][0]["champion"]["runtime"]


def _sklearn_mapped(pid: int) -> bool:
    return "/sklearn/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("trees") / "home"
    X = _frame(600, 0)
    model = _model(X)
    register(home, "plans", model, X.head(30))
    return {"home": home, "model": model}


@pytest.mark.parametrize(("flags", "runtime"), [((), "trees"), (("--no-tree-form",), "sklearn")])
def test_the_form_answers_and_refuses_as_the_model_does(
    plans: dict[str, Any], flags: tuple[str, ...], runtime: str
) -> None:
    rows = _frame(200, 5)
    unseen = rows.head(3).copy()
    unseen.loc[unseen.index[1], "city"] = "rouen"  # the signature accepts it; the encoder not
    srv = start_server(plans["home"], ["plans@champion"], "--no-log", *flags)
    try:
        url = f"{srv.url}/v1/models/plans/predict"
        served = httpx.post(url, json={"records": _records(rows)}, timeout=30)
        one = httpx.post(url, json={"records": _records(rows.iloc[[7]])}, timeout=30)
        refused = httpx.post(url, json={"records": _records(unseen)}, timeout=30)
        assert _runtime(srv.url) == runtime
        assert _sklearn_mapped(srv.proc.pid) is (runtime == "sklearn")
    finally:
        assert srv.terminate() == 0
    assert served.status_code == 200 and one.status_code == 200, (served.text, one.text)
    expected = plans["model"].predict_proba(rows)
    assert served.json()["probabilities"] == expected.tolist()  # bit for bit
    assert served.json()["predictions"] == plans["model"].predict(rows).tolist()
    assert one.json()["probabilities"] == expected[7:8].tolist()
    assert refused.status_code == 422, refused.text
    if runtime == "trees":
        assert "'city' has an unseen one, which the model refuses" in refused.json()["error"]


def test_a_form_that_is_not_a_valid_forest_is_set_aside(tmp_path: Path) -> None:
    """A hand-made package whose form's digest is right but whose arrays loop: the server warns
    and predicts with scikit-learn."""
    from modelloop.models import save_model
    from modelloop.models._trees import TREES_FILE, TREES_META_FILE

    X = _frame(400, 1)
    model = _model(X)
    folder = save_model(model, tmp_path / "pkg", input_example=X.head(30))
    with np.load(folder / TREES_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files}
    inner = np.flatnonzero(arrays["is_leaf"] == 0)
    arrays["right"][inner[0]] = inner[0]  # a split whose right child is itself
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / TREES_FILE).write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue() + b"\0" + (folder / TREES_META_FILE).read_bytes())
    meta = json.loads((folder / "metadata.json").read_text())
    meta["tree_form"]["sha256"] = digest.hexdigest()
    (folder / "metadata.json").write_text(json.dumps(meta))

    home = tmp_path / "home"
    client = Client(Settings(home=home))
    try:
        with client.start_run(experiment="serving-tests") as run:
            client.log_artifact(run.run_id, folder, "model")
        client.set_alias("looped", "champion", client.register_model(run.run_id, "looped").version)
    finally:
        client.close()
    srv = start_server(home, ["looped@champion"], "--no-log")
    try:
        rows = _frame(50, 2)
        reply = httpx.post(
            f"{srv.url}/v1/models/looped/predict", json={"records": _records(rows)}, timeout=30
        )
        assert _runtime(srv.url) == "sklearn"
    finally:
        assert srv.terminate() == 0
    assert "tree form not used" in srv.log()
    assert "a child does not follow its node inside its tree" in srv.log()
    assert reply.status_code == 200, reply.text
    assert reply.json()["probabilities"] == model.predict_proba(rows).tolist()
