"""Memory stays bounded when the prediction log cannot be written: a real ``modelloop serve``
keeps at most ``--log-max-pending-bytes`` of rows, drops and counts the rest in ``/metrics``,
and refuses a string value longer than ``--max-string-length`` with a 422 naming the column
and the row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import Server, post_many, register_mixed, sample, scrape, start_server

from modelloop.serving._codec import MAX_STRING_LENGTH

BOUND = 1_000_000
P = "modelloop_serving_"
V1 = "/v1/models/mixed/predict"


def row(city: str) -> dict[str, Any]:
    return {"amount": 101.5, "count": 3, "flag": True, "city": city}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("bound") / "home"
    register_mixed(home)
    (home / "predictions").write_text("a file where the log's folder should be")
    srv = start_server(
        home, ["mixed@champion"], "--log-max-pending-bytes", str(BOUND), "--max-batch-delay-ms", "0"
    )
    try:
        yield srv
    finally:
        srv.terminate()


def test_pending_log_bytes_stay_under_the_bound_and_drops_are_counted(server: Server) -> None:
    city = "x" * (MAX_STRING_LENGTH - 1000)  # accepted, but 60 kB a row: 40 rows are 2.6 MB
    replies = post_many(f"{server.url}{V1}", [{"records": [row(city)]}] * 40, concurrency=4)
    assert [r.status_code for r in replies] == [200] * 40, replies[0].text
    samples = scrape(server)
    pending = sample(samples, P + "prediction_log_pending_bytes")
    assert MAX_STRING_LENGTH < pending <= BOUND
    assert sample(samples, P + "prediction_log_max_pending_bytes") == BOUND
    kept = sample(samples, P + "prediction_log_pending_rows")
    assert 5 <= kept < 40
    assert sample(samples, P + "prediction_log_dropped_rows_total") == 40 - kept
    assert "dropping rows of model 'mixed'" in server.log()
    assert "--log-max-pending-bytes" in server.log()


@pytest.mark.parametrize("form", ["records", "columns", "v2"])
def test_a_string_over_the_limit_is_422_naming_column_and_row(server: Server, form: str) -> None:
    import httpx

    long = "y" * (MAX_STRING_LENGTH + 1)
    rows = [row("paris"), row(long)]
    if form == "records":
        path, body = V1, {"records": rows}
    elif form == "columns":
        path, body = V1, {"columns": {k: [r[k] for r in rows] for k in rows[0]}}
    else:
        types = {"amount": "FP64", "count": "INT64", "flag": "BOOL", "city": "BYTES"}
        path = "/v2/models/mixed/infer"
        body = {
            "inputs": [
                {"name": k, "shape": [2], "datatype": t, "data": [r[k] for r in rows]}
                for k, t in types.items()
            ]
        }
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert "'city'" in message and "row 1" in message and str(MAX_STRING_LENGTH) in message


def test_a_label_over_the_limit_is_422(server: Server) -> None:
    import httpx

    label = {"request_id": "a", "label": "z" * (MAX_STRING_LENGTH + 1)}
    response = httpx.post(f"{server.url}/v1/models/mixed/feedback", json=label, timeout=60)
    assert response.status_code == 422, response.text
    assert "label" in response.json()["error"]


def test_the_string_limit_is_a_setting(tmp_path: Path) -> None:
    import httpx

    register_mixed(tmp_path / "home")
    srv = start_server(tmp_path / "home", ["mixed@champion"], "--no-log",
                       "--max-string-length", "5")  # fmt: skip
    try:
        ok = httpx.post(f"{srv.url}{V1}", json={"records": [row("paris")]}, timeout=60)
        assert ok.status_code == 200, ok.text
        too_long = httpx.post(f"{srv.url}{V1}", json={"records": [row("lyon-x")]}, timeout=60)
        assert too_long.status_code == 422 and "row 0" in too_long.json()["error"]
    finally:
        srv.terminate()
