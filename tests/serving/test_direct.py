"""The quickstart pipeline's first step (and its classifier's own categorical preprocessor) built
straight from decoded columns: predictions bit for bit those of the whole pipeline, in process
and over real HTTP; other shapes keep pandas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_support import (
    load_package,
    mixed_frame,
    post_many,
    register,
    register_mixed,
    start_server,
)

from modelloop.serving._codec import decode_records
from modelloop.serving._routing import Predictor


def _flights(n: int, seed: int) -> pd.DataFrame:
    from modelloop.data import FLIGHTS_FEATURES, load_flights

    return load_flights(months=[1])[list(FLIGHTS_FEATURES)].sample(n, random_state=seed)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The quickstart's own pipeline (build_model), fitted on a few thousand January flights."""
    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.demo._quickstart import build_model

    home: Path = tmp_path_factory.mktemp("direct") / "home"
    train = load_flights(months=[1]).sample(4000, random_state=0)
    model = build_model().fit(train[list(FLIGHTS_FEATURES)], train["delayed"])
    register(home, "flights", model, train[list(FLIGHTS_FEATURES)].head(5))
    yield {"home": home, "package": load_package(home, "models:/flights/1")}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]


def test_the_quickstart_pipeline_predicts_bit_for_bit_without_pandas(
    quickstart: dict[str, Any],
) -> None:
    package = quickstart["package"]
    predictor = Predictor(package)
    example = decode_records(
        {"records": _records(_flights(5, seed=1))}, package.signature, max_rows=10
    )
    assert predictor.check_direct(example.columns)  # the fast way is on for this shape
    # the classifier's own categorical preprocessor is filled directly too: the model is called
    # without it (a copy sharing the fitted trees); the loaded pipeline is left as it was
    assert predictor._direct is not None
    bare, clf = predictor._direct.rest, package.model[-1]
    assert type(bare) is type(clf) and bare is not clf
    assert bare._preprocessor is None and clf._preprocessor is not None
    assert bare._predictors is clf._predictors
    rows = _flights(3000, seed=2)
    rows.iloc[::7, rows.columns.get_loc("dest")] = "ZZZ"  # a destination never seen
    rows = rows.astype({"dest": "string"})
    decoded = decode_records({"records": _records(rows)}, package.signature, max_rows=10_000)
    frame = rows.reset_index(drop=True)
    for n in (1, 16, 3000):  # a single row, a micro-batch, a bulk chunk
        part = {c: v[:n] for c, v in decoded.columns.items()}
        prediction, proba = predictor(part, n)
        expected_proba = package.model.predict_proba(frame.head(n))
        expected = package.model.predict(frame.head(n))
        assert proba.dtype == expected_proba.dtype and np.array_equal(proba, expected_proba)
        assert prediction.dtype == expected.dtype and np.array_equal(prediction, expected)
    assert predictor._direct is not None and predictor._direct.matrix(decoded.columns) is not None


@pytest.mark.parametrize(
    ("flag", "runtime"), [("--tree-form", "trees"), ("--no-tree-form", "sklearn")]
)
def test_over_http_the_answers_are_the_pipeline_s_own(
    quickstart: dict[str, Any], flag: str, runtime: str
) -> None:
    """By default the package's tree form answers (scikit-learn never enters the server);
    with --no-tree-form the pipeline itself, through the direct input. Either way, every bit
    is the pipeline's."""
    package = quickstart["package"]
    server = start_server(quickstart["home"], ["flights@champion"], "--no-log", flag)
    try:
        rows = _flights(500, seed=3).reset_index(drop=True)
        bodies = [{"records": _records(rows)}]
        bodies += [{"records": _records(rows.iloc[[i]])} for i in range(40)]
        replies = post_many(f"{server.url}/v1/models/flights/predict", bodies, concurrency=16)
        served = httpx.get(f"{server.url}/v1/models", timeout=10).json()["models"][0]
        sklearn_mapped = "/sklearn/" in Path(f"/proc/{server.proc.pid}/maps").read_text()
    finally:
        server.terminate()
    assert served["champion"]["runtime"] == runtime
    assert sklearn_mapped is (runtime == "sklearn")
    assert [r.status_code for r in replies] == [200] * len(bodies)
    proba = package.model.predict_proba(rows)
    assert replies[0].json()["probabilities"] == proba.tolist()  # JSON floats round-trip
    assert replies[0].json()["predictions"] == package.model.predict(rows).tolist()
    for i, reply in enumerate(replies[1:]):
        assert reply.json()["probabilities"] == proba[i : i + 1].tolist()


def test_a_pipeline_of_another_shape_keeps_the_pandas_way(tmp_path: Path) -> None:
    """The mixed pipeline passes a bool column through (a DataFrame would hold the block as
    objects): no direct input, and the answers are still the pipeline's."""
    register_mixed(tmp_path)
    package = load_package(tmp_path, "models:/mixed/1")
    predictor = Predictor(package)
    frame, _ = mixed_frame(50, seed=5)
    records = [
        {"amount": float(a), "count": int(c), "flag": bool(f), "city": str(t)}
        for a, c, f, t in frame.itertuples(index=False)
    ]
    decoded = decode_records({"records": records}, package.signature, max_rows=100)
    assert not predictor.check_direct(decoded.columns)
    _, proba = predictor(decoded.columns, decoded.n_rows)
    assert np.array_equal(proba, package.model.predict_proba(frame))


def test_an_encoder_that_refuses_unseen_text_still_refuses_it(tmp_path: Path) -> None:
    """handle_unknown="error": the direct input is on for known text, and unseen text gets the
    pipeline's own refusal (the model rejects the input), not a made-up code."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from modelloop.serving._errors import ModelRejectedInput

    frame, y = mixed_frame()
    frame = frame[["amount", "count", "city"]]
    encode = ColumnTransformer(
        [("num", "passthrough", ["amount", "count"]), ("cat", OrdinalEncoder(), ["city"])]
    )
    model = Pipeline(
        [("encode", encode), ("clf", HistGradientBoostingClassifier(max_iter=10))]
    ).fit(frame, y)
    register(tmp_path, "strict", model, frame.head(5))
    package = load_package(tmp_path, "models:/strict/1")
    predictor = Predictor(package)
    records = [
        {"amount": float(a), "count": int(c), "city": str(t)}
        for a, c, t in frame.head(20).itertuples(index=False)
    ]
    decoded = decode_records({"records": records}, package.signature, max_rows=100)
    assert predictor.check_direct(decoded.columns)
    _, proba = predictor(decoded.columns, decoded.n_rows)
    assert np.array_equal(proba, package.model.predict_proba(frame.head(20)))
    records[3]["city"] = "marseille"
    unseen = decode_records({"records": records}, package.signature, max_rows=100)
    with pytest.raises(ModelRejectedInput, match="marseille"):
        predictor(unseen.columns, unseen.n_rows)
