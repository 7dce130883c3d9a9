"""Large requests over real HTTP: predicted in large chunks in a lane of their own, with the
in-process answers, and admitted beside one another below ``--max-rows``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_support import (
    Server,
    load_package,
    mixed_frame,
    post_many,
    register_mixed,
    start_server,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("bulk") / "home"
    register_mixed(home)
    # the defaults: --max-rows 10000, --max-queue-rows 2048, --max-batch-rows 64
    server = start_server(home, ["mixed@champion"], "--no-log", "--reload-interval", "0")
    try:
        yield {"server": server, "package": load_package(home, "models:/mixed/1")}
    finally:
        server.terminate()


def _body(frame: Any, rid: str) -> dict[str, Any]:
    records = frame.to_dict(orient="records")
    for r in records:  # plain JSON types
        r["count"], r["flag"], r["city"] = int(r["count"]), bool(r["flag"]), str(r["city"])
    return {"records": records, "id": rid}


def _check(reply: Any, package: Any, frame: Any) -> None:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["predictions"] == package.predict(frame).tolist()
    # bit for bit: JSON floats round-trip exactly
    assert body["probabilities"] == package.predict_proba(frame).tolist()


def test_a_10000_row_request_gets_the_in_process_predictions(served: dict[str, Any]) -> None:
    server: Server = served["server"]
    frame, _ = mixed_frame(10_000, seed=1)
    reply = post_many(f"{server.url}/v1/models/mixed/predict", [_body(frame, "big")])[0]
    _check(reply, served["package"], frame)
    assert reply.json()["row_ids"][-1] == "big/9999"


def test_two_concurrent_2000_row_requests_are_both_answered(served: dict[str, Any]) -> None:
    """Two 2,000-row requests beside a 10,000-row one: 14,000 rows at once, far more than
    --max-queue-rows (2,048) but each request within --max-rows. Large requests wait in a lane
    of their own, which takes a few of the largest at once: none is refused."""
    server: Server = served["server"]
    frames = [mixed_frame(n, seed=s)[0] for n, s in ((10_000, 2), (2000, 3), (2000, 4))]
    bodies = [_body(f, f"r{i}") for i, f in enumerate(frames)]
    for _ in range(2):
        replies = post_many(f"{server.url}/v1/models/mixed/predict", bodies, concurrency=3)
        assert [r.status_code for r in replies] == [200] * 3, [r.text[:200] for r in replies]
        for reply, frame in zip(replies, frames, strict=True):
            _check(reply, served["package"], frame)


def test_single_rows_are_answered_beside_large_requests(served: dict[str, Any]) -> None:
    server: Server = served["server"]
    frame, _ = mixed_frame(5000, seed=4)
    singles = [frame.iloc[[i]] for i in range(30)]
    bodies = [_body(frame, "big"), *(_body(s, f"s{i}") for i, s in enumerate(singles))]
    replies = post_many(f"{server.url}/v1/models/mixed/predict", bodies, concurrency=len(bodies))
    _check(replies[0], served["package"], frame)
    for reply, single in zip(replies[1:], singles, strict=True):
        _check(reply, served["package"], single)
    np.testing.assert_array_equal(
        [r.json()["predictions"][0] for r in replies[1:]],
        served["package"].predict(frame.iloc[:30]),
    )
