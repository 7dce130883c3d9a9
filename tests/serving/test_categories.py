"""Categories of string columns in serving: a column whose signature says ``unseen: refuse``
answers 422 naming the column, row and value; one that says ``accept`` serves the value and
counts it per model, version and column. The quickstart model refuses unknown carriers, origins
and destinations, over real HTTP and in process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_support import Server, load_package, register, sample, scrape, start_server

from modelloop.exceptions import SchemaMismatch
from modelloop.models import ColumnSpec, Signature
from modelloop.serving._codec import decode_records, decode_v2, to_frame, unseen_counts

README_ROW = {
    "day_of_week": 2,
    "sched_dep_hour": 8,
    "distance": 1400,
    "dep_delay": 25,
    "carrier": "UA",
    "origin": "EWR",
    "dest": "ORD",
}
UNSEEN = "modelloop_serving_unseen_categories_total"


def _signature() -> Signature:
    return Signature(
        inputs=(
            ColumnSpec("plan", "string", False, categories=("free", "pro"), unseen="refuse"),
            ColumnSpec("city", "string", True, categories=("paris", "lyon"), unseen="accept"),
            ColumnSpec("x", "float64", False),
        )
    )


# -- decoding ----------------------------------------------------------------------------------


def test_refused_category_names_column_row_and_value_in_every_form() -> None:
    sig = _signature()
    rows = [{"plan": "pro", "city": "paris", "x": 1.0}, {"plan": "gold", "city": "lyon", "x": 2.0}]
    with pytest.raises(SchemaMismatch, match=r"column 'plan', row 1: .*'gold'") as info:
        decode_records({"records": rows}, sig, max_rows=5)
    assert info.value.column == "plan" and info.value.http_status == 422
    with pytest.raises(SchemaMismatch, match=r"'plan', row 0: .*'gold'"):
        decode_records({"records": rows[1:]}, sig, max_rows=5)  # the single-row path too
    tensors = {
        "inputs": [
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["free", "gold"]},
            {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["paris", None]},
            {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
        ]
    }
    with pytest.raises(SchemaMismatch, match=r"'plan', row 1: .*'gold'"):
        decode_v2(tensors, sig, max_rows=5)
    # a number is no category of a string column
    with pytest.raises(SchemaMismatch, match="'plan', row 0"):
        decode_records({"records": [{"plan": 1, "city": "paris", "x": 1.0}]}, sig, max_rows=1)


def test_accepted_unseen_values_pass_and_are_counted() -> None:
    sig = _signature()
    body = {"columns": {"plan": ["pro"] * 3, "city": ["nice", None, "nice"], "x": [1.0] * 3}}
    decoded = decode_records(body, sig, max_rows=5)
    assert decoded.columns["city"] == ["nice", None, "nice"]
    assert unseen_counts(decoded.columns, sig) == {"city": 2}
    known = decode_records(
        {"records": [{"plan": "free", "city": "lyon", "x": 0.0}]}, sig, max_rows=1
    )
    assert unseen_counts(known.columns, sig) == {}
    # the frame the model gets is the one Signature.validate gives for the same rows
    pd.testing.assert_frame_equal(to_frame(decoded.columns, sig), sig.validate(decoded.columns))


# -- a small model over real HTTP --------------------------------------------------------------


def _register_plans(home: Path) -> None:
    """'plan' refuses unseen values, 'city' accepts them; categories from 400 training rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from modelloop.models import infer_signature

    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "plan": rng.choice(["free", "pro"], 400),
            "city": rng.choice(["paris", "lyon"], 400),
            "x": rng.normal(size=400),
        }
    )
    y = ((X["plan"] == "pro") ^ (X["x"] > 0)).astype(int)
    onehot = OneHotEncoder(handle_unknown="ignore")
    model = make_pipeline(
        ColumnTransformer([("cat", onehot, ["plan", "city"]), ("num", "passthrough", ["x"])]),
        LogisticRegression(),
    ).fit(X, y)
    inferred = infer_signature(X, y, model=model, categorical=["plan", "city"], unseen="refuse")
    assert [c.categories for c in inferred.inputs[:2]] == [("free", "pro"), ("lyon", "paris")]
    signature = replace(  # one policy per inference; a column of its own by replacing its spec
        inferred,
        inputs=tuple(
            replace(c, unseen="accept") if c.name == "city" else c for c in inferred.inputs
        ),
    )
    register(home, "plans", model, X.head(5), signature=signature)


@pytest.fixture(scope="module")
def plans_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("categories") / "home"
    _register_plans(home)
    srv = start_server(home, ["plans@champion"], "--no-log")
    try:
        yield srv
    finally:
        srv.terminate()


def _post(server: Server, path: str, body: Any) -> Any:
    import httpx

    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_server_refuses_and_counts_by_the_signature_policy(plans_server: Server) -> None:
    refused = _post(
        plans_server,
        "/v1/models/plans/predict",
        {
            "records": [
                {"plan": "free", "city": "paris", "x": 0.5},
                {"plan": "gold", "city": "paris", "x": 0.5},
            ]
        },
    )
    assert refused.status_code == 422, refused.text
    assert "'plan'" in refused.json()["error"] and "row 1" in refused.json()["error"]
    assert "'gold'" in refused.json()["error"]
    before = sample(scrape(plans_server), UNSEEN, model="plans", version="1", column="city")
    served = _post(
        plans_server,
        "/v1/models/plans/predict",
        {
            "columns": {
                "plan": ["pro", "free", "pro"],
                "city": ["nice", "paris", "nice"],
                "x": [0.1, 0.2, 0.3],
            }
        },
    )
    assert served.status_code == 200, served.text
    assert len(served.json()["predictions"]) == 3
    v2 = _post(
        plans_server,
        "/v2/models/plans/infer",
        {
            "inputs": [
                {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["free"]},
                {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["nice"]},
                {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]},
            ]
        },
    )
    assert v2.status_code == 200, v2.text
    after = scrape(plans_server)
    assert sample(after, UNSEEN, model="plans", version="1", column="city") == before + 3
    assert sample(after, UNSEEN, model="plans", version="1", column="plan") == 0


# -- the quickstart model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelloop import Client, Settings
    from modelloop.demo import run_quickstart

    home = tmp_path_factory.mktemp("quickstart") / "home"
    client = Client(Settings(home=home))
    try:
        run_quickstart(client)
    finally:
        client.close()
    return home


@pytest.mark.slow
def test_quickstart_server_answers_422_for_an_unknown_carrier(quickstart_home: Path) -> None:
    server = start_server(quickstart_home, ["flights-delay@champion"], "--no-log")
    try:
        path = "/v1/models/flights-delay/predict"
        good = _post(server, path, {"records": [README_ROW]})
        assert good.status_code == 200, good.text
        for column, value in (("carrier", "ZZ"), ("origin", "BOS"), ("dest", "ZZZ")):
            bad = _post(server, path, {"records": [README_ROW, {**README_ROW, column: value}]})
            assert bad.status_code == 422, (column, bad.text)
            error = bad.json()["error"]
            assert f"'{column}'" in error and "row 1" in error and repr(value) in error, error
        # a destination flown only after the training months is admitted
        late = _post(server, path, {"records": [{**README_ROW, "dest": "ANC"}]})
        assert late.status_code == 200, late.text
    finally:
        server.terminate()


@pytest.mark.slow
def test_quickstart_model_refuses_an_unknown_carrier_in_process(quickstart_home: Path) -> None:
    model = load_package(quickstart_home, "models:/flights-delay@champion")
    assert model.signature is not None
    by = {c.name: c for c in model.signature.inputs}
    assert all(by[c].refuses_unseen for c in ("carrier", "origin", "dest"))
    assert set(by["origin"].categories or ()) == {"EWR", "JFK", "LGA"}
    assert model.predict(README_ROW).shape == (1,)
    with pytest.raises(SchemaMismatch, match=r"'carrier'.*row 0.*'ZZ'"):
        model.predict({**README_ROW, "carrier": "ZZ"})
