"""``/metrics`` of a real ``modelloop serve`` process after known traffic, parsed with
prometheus_client's own parser; and the OpenAPI document and docs page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import Server, metric_samples, register_mixed, start_server

P = "modelloop_serving_"
ROW = {"amount": 101.5, "count": 3, "flag": True, "city": "paris"}
MAX_BATCH = 4
MAX_ROWS = 50


def v2_body(n: int) -> dict[str, Any]:
    types = {"amount": "FP64", "count": "INT64", "flag": "BOOL", "city": "BYTES"}
    return {
        "inputs": [
            {"name": k, "shape": [n], "datatype": types[k], "data": [v] * n} for k, v in ROW.items()
        ]
    }


class Traffic:
    """What was sent, to compare the metrics with."""

    ok_requests = 0
    ok_rows = 0
    overloaded = 0
    retry_after: str | None = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home: Path = tmp_path_factory.mktemp("metrics") / "home"
    register_mixed(home)
    srv = start_server(
        home,
        ["mixed@champion"],
        "--max-batch-rows", str(MAX_BATCH),
        "--max-queue-rows", str(MAX_BATCH),
        "--max-rows", str(MAX_ROWS),
        "--reload-interval", "0",
    )  # fmt: skip
    try:
        yield srv
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def traffic(server: Server) -> Traffic:
    """Sequential requests of known sizes and outcomes."""
    import httpx

    t = Traffic()
    with httpx.Client(base_url=server.url, timeout=60) as http:

        def ok(response: httpx.Response, rows: int) -> None:
            assert response.status_code == 200, response.text
            t.ok_requests += 1
            t.ok_rows += rows

        for _ in range(5):
            ok(http.post("/v1/models/mixed/predict", json={"records": [ROW]}), 1)
        for _ in range(3):
            ok(http.post("/v2/models/mixed/infer", json=v2_body(2)), 2)
        ok(http.post("/v1/models/mixed/predict", json={"records": [ROW] * 3}), 3)
        bad = http.post("/v1/models/mixed/predict", json={"records": [{**ROW, "amount": "x"}]})
        assert bad.status_code == 422
        big = http.post("/v1/models/mixed/predict", json={"records": [ROW] * (MAX_ROWS + 1)})
        assert big.status_code == 413
        # A burst of concurrent requests overflows the small queue: some are refused at once.
        from concurrent.futures import ThreadPoolExecutor

        def burst(_: int) -> httpx.Response:
            with httpx.Client(base_url=server.url, timeout=60) as own:
                return own.post("/v2/models/mixed/infer", json=v2_body(MAX_BATCH))

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(burst, range(48)))
        assert {r.status_code for r in answers} <= {200, 503}
        for r in answers:
            if r.status_code == 200:
                ok(r, MAX_BATCH)
            else:
                t.overloaded += 1
                t.retry_after = r.headers.get("retry-after")
        assert t.overloaded >= 1
        unknown = http.post("/v1/models/no-such-model-x7/predict", json={"records": [ROW]})
        assert unknown.status_code == 404
    return t


def value(samples: list, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, [(n, lab) for n, lab, _ in samples if n == name])
    return found[0]


def test_requests_by_model_version_route_status(server: Server, traffic: Traffic) -> None:
    samples = metric_samples(server)
    name = P + "requests_total"
    ok = value(samples, name, model="mixed", version="1", route="champion", status="200")
    assert ok == traffic.ok_requests
    by_status = {lab["status"]: v for n, lab, v in samples if n == name and lab["model"] == "mixed"}
    assert by_status.get("422") == 1
    assert by_status.get("413") == 1
    assert by_status.get("503") == traffic.overloaded


def test_failed_request_is_counted_with_the_version_it_was_routed_to(
    server: Server, traffic: Traffic
) -> None:
    # A 422 comes from the champion's signature: its version and route are known.
    samples = metric_samples(server)
    assert value(samples, P + "requests_total", model="mixed", status="422") == 1
    assert (
        value(
            samples,
            P + "requests_total",
            model="mixed",
            version="1",
            route="champion",
            status="422",
        )
        == 1
    )


def test_unknown_model_names_do_not_become_labels(server: Server, traffic: Traffic) -> None:
    # Path segments are client input: labelling by them lets anyone grow /metrics without bound.
    samples = metric_samples(server)
    assert not [(n, lab) for n, lab, _ in samples if "no-such-model-x7" in lab.values()]


def test_latency_histogram(server: Server, traffic: Traffic) -> None:
    samples = metric_samples(server)
    name = P + "request_duration_seconds"
    count = value(samples, name + "_count", model="mixed", route="champion")
    # every request routed to the champion is timed, answered or not (the 422, the 413, the 503s)
    assert count == traffic.ok_requests + traffic.overloaded + 2
    assert value(samples, name + "_sum", model="mixed", route="champion") > 0
    buckets = sorted(
        (float(lab["le"]), v)
        for n, lab, v in samples
        if n == name + "_bucket" and lab["model"] == "mixed" and lab["route"] == "champion"
    )
    assert buckets[0][0] <= 0.001 and buckets[-1] == (float("inf"), count)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)


def test_batch_size_histogram(server: Server, traffic: Traffic) -> None:
    samples = metric_samples(server)
    name = P + "batch_size"
    assert value(samples, name + "_sum", model="mixed", version="1") == traffic.ok_rows
    count = value(samples, name + "_count", model="mixed", version="1")
    assert 1 <= count <= traffic.ok_requests
    # No batch is over the maximum.
    assert value(samples, name + "_bucket", model="mixed", version="1", le="4.0") == count


def test_queue_depth_and_rejections(server: Server, traffic: Traffic) -> None:
    samples = metric_samples(server)
    assert value(samples, P + "queue_depth", model="mixed") == 0
    rejected = P + "rejected_requests_total"
    assert value(samples, rejected, model="mixed", reason="queue_full") == traffic.overloaded
    assert value(samples, rejected, model="mixed", reason="too_large") == 1
    assert traffic.retry_after is not None and traffic.retry_after.isdigit()


def test_model_version_and_readiness(server: Server, traffic: Traffic) -> None:
    samples = metric_samples(server)
    assert value(samples, P + "model_version", model="mixed", route="champion") == 1
    assert value(samples, P + "ready") == 1


def test_prediction_log_rows_and_lag(server: Server, traffic: Traffic) -> None:
    deadline = time.monotonic() + 30
    while True:
        samples = metric_samples(server)
        written = value(samples, P + "prediction_log_rows_total")
        if written >= traffic.ok_rows or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert written == traffic.ok_rows
    assert value(samples, P + "prediction_log_pending_rows") == 0
    assert value(samples, P + "prediction_log_lag_seconds") == 0
    assert value(samples, P + "prediction_log_errors_total") == 0
    assert value(samples, P + "prediction_log_dropped_rows_total") == 0


def test_metric_names_follow_prometheus_conventions(server: Server, traffic: Traffic) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ours = {n: f for n, f in families.items() if n.startswith(P)}
    assert len(ours) >= 12
    for name, family in ours.items():
        assert family.documentation, name
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {name + "_total", name + "_created"}
        if name.endswith(("_seconds", "_rows", "_size")):
            assert family.type in ("gauge", "histogram", "counter"), name


# -- OpenAPI ---------------------------------------------------------------------------------

PATHS = {
    "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}",
    "/v2/models/{name}/ready", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/ready", "/v2/models/{name}/versions/{version}/infer",
    "/v1/models/{name}/predict", "/v1/models/{name}/feedback", "/metrics",
}  # fmt: skip


def test_openapi_lists_the_v1_and_v2_paths(server: Server) -> None:
    import httpx

    response = httpx.get(f"{server.url}/openapi.json", timeout=60)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= PATHS
    assert "post" in doc["paths"]["/v1/models/{name}/predict"]
    assert "requestBody" in doc["paths"]["/v1/models/{name}/predict"]["post"]


def test_docs_page_answers(server: Server) -> None:
    import httpx

    response = httpx.get(f"{server.url}/docs", timeout=60)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text
