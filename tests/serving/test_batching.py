"""Micro-batching over real HTTP: concurrent requests give the in-process answers, and the
batch-size histogram shows batches that formed and never exceeded ``--max-batch-rows``."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_support import (
    Server,
    breast_cancer,
    metric_samples,
    post_many,
    register_rf,
    start_server,
    wait_until_ready,
)

MAX_BATCH = 8


def batch_histogram(server: Server) -> dict[str, float]:
    """``le`` -> cumulative count, plus ``count`` and ``sum``, of the batch-size histogram."""
    out: dict[str, float] = {"count": 0.0, "sum": 0.0}
    for name, labels, value in metric_samples(server):
        if not name.startswith("modelloop_serving_batch_size_") or labels.get("model") != "cancer":
            continue
        if name.endswith("_bucket"):
            out[labels["le"]] = out.get(labels["le"], 0.0) + value
        elif name.endswith("_count"):
            out["count"] += value
        elif name.endswith("_sum"):
            out["sum"] += value
    return out


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("batching") / "home"
    register_rf(home)
    batched = start_server(
        home,
        ["cancer@champion"],
        "--max-batch-rows",
        str(MAX_BATCH),
        "--max-batch-delay-ms",
        "5",
        "--no-log",
        "--reload-interval",
        "0",
        wait_ready=False,
    )
    unbatched = start_server(
        home,
        ["cancer@champion"],
        "--no-batching",
        "--no-log",
        "--reload-interval",
        "0",
        wait_ready=False,
    )
    try:
        wait_until_ready(batched)
        wait_until_ready(unbatched)
        from modelloop._client import Client
        from modelloop._config import Settings

        client = Client(Settings(home=home))
        try:
            package = client.load_model("models:/cancer/1")
        finally:
            client.close()
        X, _ = breast_cancer()
        proba = package.predict_proba(X)
        yield {
            "batched": batched,
            "unbatched": unbatched,
            "X": X,
            "proba": proba,
            "pred": package.predict(X),
            "package": package,
        }
    finally:
        for server in (batched, unbatched):  # stop both at once, then wait
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        batched.terminate()
        unbatched.terminate()


def v1_body(X: Any, rows: range | list[int], rid: str) -> dict[str, Any]:
    return {"records": X.iloc[list(rows)].to_dict(orient="records"), "id": rid}


def v2_body(X: Any, row: int, rid: str) -> dict[str, Any]:
    return {
        "id": rid,
        "inputs": [
            {"name": c, "shape": [1], "datatype": "FP64", "data": [float(X[c].iloc[row])]}
            for c in X.columns
        ],
    }


def check_v1(resp: Any, served: dict[str, Any], rows: list[int], rid: str) -> None:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["request_id"] == rid
    assert body["model_version"] == 1
    assert body["predictions"] == served["pred"][rows].tolist()
    np.testing.assert_allclose(body["probabilities"], served["proba"][rows], rtol=0, atol=1e-12)


def check_v2(resp: Any, served: dict[str, Any], row: int, rid: str) -> None:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == rid and body["model_version"] == "1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["predict"]["data"] == [served["pred"][row].item()]
    assert out["predict_proba"]["shape"] == [1, 2]
    np.testing.assert_allclose(out["predict_proba"]["data"], served["proba"][row], atol=1e-12)


def test_200_concurrent_single_rows_match_in_process_and_respect_max_batch(
    served: dict[str, Any],
) -> None:
    server, X = served["batched"], served["X"]
    before = batch_histogram(server)
    bodies: list[dict[str, Any]] = []
    urls: list[str] = []
    for i in range(200):
        if i % 2 == 0:
            urls.append(f"{server.url}/v1/models/cancer/predict")
            bodies.append(v1_body(X, [i], f"b{i}"))
        else:
            urls.append(f"{server.url}/v2/models/cancer/infer")
            bodies.append(v2_body(X, i, f"b{i}"))
    responses = post_many(urls, bodies, concurrency=200)
    # the reference: the same rows predicted one by one in this process
    package = served["package"]
    proba = np.vstack([package.predict_proba(X.iloc[[i]]) for i in range(200)])
    # a random forest predicts the class of highest probability
    one_by_one = {"pred": package.model.classes_[proba.argmax(axis=1)], "proba": proba}
    for i, resp in enumerate(responses):
        if i % 2 == 0:
            check_v1(resp, one_by_one, [i], f"b{i}")
        else:
            check_v2(resp, one_by_one, i, f"b{i}")
    after = batch_histogram(server)
    batches = delta(after, before, "count")
    assert delta(after, before, "sum") == 200  # every row predicted exactly once
    # no batch above the maximum: the bucket at the maximum holds every batch
    assert delta(after, before, f"{float(MAX_BATCH)}") == batches
    # and batching happened: fewer batches than requests, some with more than one row
    assert batches < 200
    assert delta(after, before, "1.0") < batches


def test_request_larger_than_max_batch_is_predicted_in_one_call_beside_the_batches(
    served: dict[str, Any],
) -> None:
    server, X = served["batched"], served["X"]
    url = f"{server.url}/v1/models/cancer/predict"
    before = batch_histogram(server)
    big_rows = list(range(200, 264))  # 64 rows: eight times the largest batch
    bodies = [v1_body(X, big_rows, "big")]
    bodies += [v1_body(X, [300 + i], f"s{i}") for i in range(40)]
    # the big request in the middle of the burst, so that singles queue before and after it
    bodies.insert(20, bodies.pop(0))
    responses = post_many(url, bodies, concurrency=len(bodies))
    for body, resp in zip(bodies, responses, strict=True):
        rows = big_rows if body["id"] == "big" else [300 + int(body["id"][1:])]
        check_v1(resp, served, rows, body["id"])
    big = next(r for b, r in zip(bodies, responses, strict=True) if b["id"] == "big").json()
    assert big["row_ids"] == [f"big/{i}" for i in range(64)]
    after = batch_histogram(server)
    batches = delta(after, before, "count")
    assert delta(after, before, "sum") == 64 + 40
    # the singles' batches stay within the maximum; the big request is one call of its own
    # (the bulk lane's chunks are thousands of rows), not eight slices in the batches' way
    assert delta(after, before, f"{float(MAX_BATCH)}") == batches - 1
    assert delta(after, before, "32.0") == batches - 1
    assert delta(after, before, "64.0") == batches


def test_no_batching_predicts_every_request_on_its_own(served: dict[str, Any]) -> None:
    server, X = served["unbatched"], served["X"]
    url = f"{server.url}/v1/models/cancer/predict"
    before = batch_histogram(server)
    bodies = [v1_body(X, [i], f"n{i}") for i in range(100)]
    bodies.append(v1_body(X, range(400, 405), "five"))
    responses = post_many(url, bodies, concurrency=len(bodies))
    for i, resp in enumerate(responses[:100]):
        check_v1(resp, served, [i], f"n{i}")
    check_v1(responses[100], served, list(range(400, 405)), "five")
    after = batch_histogram(server)
    assert delta(after, before, "count") == 101
    assert delta(after, before, "1.0") == 100
    assert delta(after, before, "sum") == 105
