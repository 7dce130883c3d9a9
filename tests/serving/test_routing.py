"""Canary and shadow routing on a real server: the canary share, sticky keys, shadow answers
logged but never returned, and routing changed at runtime through the admin endpoint.

One server serves two names: ``cancer`` (champion v1, canary v2 at 20 %) and ``cancer_s``
(champion v1, shadow v2), so the two modes are tested side by side without a second process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_support import (
    Server,
    breast_cancer,
    post_many,
    read_parquets,
    register_rf,
    sample,
    scrape,
    start_server,
)

SHARE = 0.2


def requests_counted(server: Server, model: str, version: str, route: str) -> float:
    return sample(
        scrape(server),
        "modelloop_serving_requests_total",
        model=model,
        version=version,
        route=route,
        status="200",
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("routing") / "home"
    for name in ("cancer", "cancer_s"):
        assert register_rf(home, name, random_state=0) == 1
        assert register_rf(home, name, random_state=1, alias="challenger") == 2
    server = start_server(
        home,
        ["cancer@champion", "cancer_s@champion"],
        "--canary",
        f"cancer@challenger:{SHARE}",
        "--shadow",
        "cancer_s@challenger",
        "--reload-interval",
        "0",
    )
    try:
        from modelloop._client import Client
        from modelloop._config import Settings

        X, _ = breast_cancer()
        client = Client(Settings(home=home))
        expected: dict[tuple[str, int], np.ndarray] = {}
        try:
            for name in ("cancer", "cancer_s"):
                for version in (1, 2):
                    package = client.load_model(f"models:/{name}/{version}")
                    expected[name, version] = package.predict_proba(X)
        finally:
            client.close()
        # the two versions must disagree somewhere, or the routing checks below prove nothing
        assert not np.array_equal(expected["cancer", 1], expected["cancer", 2])
        yield {"server": server, "home": home, "X": X, "proba": expected}
    finally:
        server.terminate()


def records(X: Any, rows: list[int]) -> list[dict[str, Any]]:
    return X.iloc[rows].to_dict(orient="records")


def test_canary_share_is_within_tolerance_and_answers_say_who_answered(
    served: dict[str, Any],
) -> None:
    server, X, proba = served["server"], served["X"], served["proba"]
    n = 2000
    rows = [i % len(X) for i in range(n)]
    all_records = records(X, list(range(len(X))))
    bodies = [{"records": [all_records[r]]} for r in rows]
    before = {
        v: requests_counted(server, "cancer", v, r) for v, r in (("1", "champion"), ("2", "canary"))
    }
    responses = post_many(f"{server.url}/v1/models/cancer/predict", bodies)
    canary = 0
    for row, resp in zip(rows, responses, strict=True):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["route"], body["model_version"]) in {("champion", 1), ("canary", 2)}
        canary += body["route"] == "canary"
        # the probabilities are those of the version the answer names
        np.testing.assert_allclose(
            body["probabilities"][0], proba["cancer", body["model_version"]][row], atol=1e-12
        )
    sd = math.sqrt(n * SHARE * (1 - SHARE))
    assert abs(canary - n * SHARE) <= 4.5 * sd, (canary, n * SHARE, sd)
    assert requests_counted(server, "cancer", "2", "canary") - before["2"] == canary
    assert requests_counted(server, "cancer", "1", "champion") - before["1"] == n - canary


def test_the_same_key_always_gets_the_same_route(served: dict[str, Any]) -> None:
    server, X = served["server"], served["X"]
    one = records(X, [0])
    keys = [f"user-{i}" for i in range(150)]
    order = keys * 3  # each key three times, spread over the run
    bodies = [{"records": one, "key": k} for k in order]
    # the same keys through V2, in parameters.key
    v2_input = [
        {"name": c, "shape": [1], "datatype": "FP64", "data": [float(X[c].iloc[0])]}
        for c in X.columns
    ]
    v2_bodies = [{"inputs": v2_input, "parameters": {"key": k}} for k in keys]
    urls = [f"{server.url}/v1/models/cancer/predict"] * len(bodies)
    urls += [f"{server.url}/v2/models/cancer/infer"] * len(v2_bodies)
    responses = post_many(urls, bodies + v2_bodies)
    seen: dict[str, set[tuple[str, int]]] = {}
    for key, resp in zip(order, responses[: len(bodies)], strict=True):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        seen.setdefault(key, set()).add((body["route"], body["model_version"]))
    assert all(len(routes) == 1 for routes in seen.values()), {
        k: v for k, v in seen.items() if len(v) > 1
    }
    routes = {next(iter(v))[0] for v in seen.values()}
    assert routes == {"champion", "canary"}  # 150 keys at 20 %: both occur
    canary_keys = sum(next(iter(v))[0] == "canary" for v in seen.values())
    sd = math.sqrt(150 * SHARE * (1 - SHARE))
    assert abs(canary_keys - 150 * SHARE) <= 4.5 * sd
    for key, resp in zip(keys, responses[len(bodies) :], strict=True):
        assert resp.status_code == 200, resp.text
        assert int(resp.json()["model_version"]) == next(iter(seen[key]))[1], key


def read_log(home: Path, model: str) -> Any:
    return read_parquets(home / "predictions" / model)


def test_shadow_answers_are_logged_and_never_returned(served: dict[str, Any]) -> None:
    server, X, proba, home = served["server"], served["X"], served["proba"], served["home"]
    row_of: dict[str, int] = {}
    bodies = []
    for i in range(120):
        rows = [i, i + 200, i + 400] if i % 4 == 0 else [i]
        rid = f"shadow-{i}"
        bodies.append({"records": records(X, rows), "id": rid})
        if len(rows) == 1:
            row_of[rid] = rows[0]
        else:
            row_of.update({f"{rid}/{j}": r for j, r in enumerate(rows)})
    responses = post_many(f"{server.url}/v1/models/cancer_s/predict", bodies)
    for resp in responses:
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert (out["route"], out["model_version"]) == ("champion", 1)
        rows = [row_of[rid] for rid in out.get("row_ids", [out["request_id"]])]
        np.testing.assert_allclose(out["probabilities"], proba["cancer_s", 1][rows], atol=1e-12)
    # the log is flushed on time (every 2 s by default): wait for both copies of every row
    deadline = time.monotonic() + 20
    log = read_log(home, "cancer_s")
    while len(log) < 2 * len(row_of) and time.monotonic() < deadline:
        time.sleep(0.25)
        log = read_log(home, "cancer_s")
    assert len(log) == 2 * len(row_of)
    for route, version in (("champion", 1), ("shadow", 2)):
        part = log[log["route"] == route]
        assert sorted(part["request_id"]) == sorted(row_of), route
        assert set(part["model_version"].astype(int)) == {version}
        rows = [row_of[r] for r in part["request_id"]]
        np.testing.assert_allclose(
            part[["proba_0", "proba_1"]].to_numpy(), proba["cancer_s", version][rows], atol=1e-12
        )
        np.testing.assert_allclose(
            part["mean radius"].to_numpy(), X["mean radius"].to_numpy()[rows]
        )


def put_routing(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    resp = httpx.put(f"{server.url}/v1/admin/models/cancer/routing", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_admin_switches_routing_at_runtime(served: dict[str, Any]) -> None:
    import httpx

    server, X = served["server"], served["X"]
    url = f"{server.url}/v1/models/cancer/predict"
    bodies = [{"records": records(X, [i])} for i in range(60)]

    def answers() -> set[tuple[str, int]]:
        out = set()
        for resp in post_many(url, bodies, concurrency=8):
            assert resp.status_code == 200, resp.text
            out.add((resp.json()["route"], resp.json()["model_version"]))
        return out

    def routing() -> dict[str, Any]:
        listed = httpx.get(f"{server.url}/v1/admin/routing", timeout=10).json()["models"]
        return next(m for m in listed if m["name"] == "cancer")

    try:
        desc = put_routing(server, {"mode": "off"})
        assert desc["mode"] == "off" and desc["challenger"] is None
        assert routing()["mode"] == "off"
        assert answers() == {("champion", 1)}

        desc = put_routing(server, {"challenger": "@challenger", "mode": "canary", "share": 1.0})
        assert (desc["mode"], desc["share"], desc["challenger"]["version"]) == ("canary", 1.0, 2)
        assert routing()["challenger"]["version"] == 2
        assert answers() == {("canary", 2)}

        shadow_before = requests_counted(server, "cancer", "2", "shadow")
        desc = put_routing(server, {"mode": "shadow"})  # keeps the loaded challenger
        assert (desc["mode"], desc["challenger"]["version"]) == ("shadow", 2)
        assert answers() == {("champion", 1)}
        deadline = time.monotonic() + 10  # shadow copies run after the answer
        while (
            requests_counted(server, "cancer", "2", "shadow") - shadow_before < len(bodies)
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert requests_counted(server, "cancer", "2", "shadow") - shadow_before == len(bodies)

        desc = put_routing(server, {"mode": "off"})
        assert desc["mode"] == "off" and desc["challenger"] is None
        assert answers() == {("champion", 1)}
        assert routing()["mode"] == "off"
    finally:  # leave the module's server as it started
        put_routing(server, {"challenger": "@challenger", "mode": "canary", "share": SHARE})


def test_shadow_copies_still_queued_at_sigterm_are_logged(served: dict[str, Any]) -> None:
    """Last in the module: it stops the shared server. SIGTERM right after the last answer, while
    shadow copies may still wait for the challenger: shutdown predicts and logs them too."""
    server, X, home = served["server"], served["X"], served["home"]
    all_records = records(X, list(range(len(X))))
    bodies = [{"records": [all_records[i]], "id": f"late-{i}"} for i in range(300)]
    responses = post_many(f"{server.url}/v1/models/cancer_s/predict", bodies)
    assert {r.status_code for r in responses} == {200}
    assert server.terminate() == 0
    log = read_log(home, "cancer_s")
    late = log[log["request_id"].str.startswith("late-")]
    counts = late.groupby("route")["request_id"].nunique().to_dict()
    assert counts == {"champion": 300, "shadow": 300}
    assert len(late) == 600
