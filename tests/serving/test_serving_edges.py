"""Edge cases found in review: a model refusing a value, odd version strings, HEAD probes,
log-column clashes and out-of-range settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_support import Server, post_many, register, start_server

from modelloop._config import Settings
from modelloop.exceptions import InvalidInput
from modelloop.serving import ServeConfig


def _register(home: Path, name: str, frame: pd.DataFrame, y: Any) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    strings = [c for c in frame.columns if frame[c].dtype == "string"]
    numbers = [c for c in frame.columns if c not in strings]
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [
                        ("num", "passthrough", numbers),
                        ("cat", OneHotEncoder(handle_unknown="error"), strings),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)
    register(home, name, model, frame.head(10))


def _frame(n: int = 200, **renames: str) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"amount": rng.normal(size=n), "city": pd.array(rng.choice(["a", "b"], n), "string")}
    )
    y = ((frame["amount"] > 0) ^ (frame["city"] == "a")).to_numpy().astype(int)
    return frame.rename(columns=renames), y


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("edges") / "home"
    frame, y = _frame()
    _register(home, "strict", frame, y)
    srv = start_server(home, ["strict@champion"], "--max-batch-delay-ms", "20")
    try:
        yield srv
    finally:
        srv.terminate()


def test_a_value_the_model_refuses_is_a_422_and_spares_the_rest_of_its_batch(
    server: Server,
) -> None:
    url = f"{server.url}/v1/models/strict/predict"
    good = {"records": [{"amount": 0.5, "city": "a"}]}
    bad = {"records": [{"amount": 0.5, "city": "zzz"}]}  # fits the signature, not the encoder
    bodies = [bad if i % 4 == 0 else good for i in range(40)]
    replies = post_many(url, bodies, concurrency=40)
    for body, reply in zip(bodies, replies, strict=True):
        if body is bad:
            assert reply.status_code == 422, reply.text
            assert "could not predict this input" in reply.json()["error"]
            assert "zzz" in reply.json()["error"]
        else:
            assert reply.status_code == 200, reply.text
            assert reply.json()["predictions"] == replies[1].json()["predictions"]


@pytest.mark.parametrize("version", ["%C2%B2", "1" * 5000, "0", "-1", "1.0"])
def test_odd_version_strings_are_not_found(server: Server, version: str) -> None:
    import httpx

    for path in (
        f"/v2/models/strict/versions/{version}",
        f"/v2/models/strict/versions/{version}/ready",
    ):
        reply = httpx.get(server.url + path, timeout=30)
        assert reply.status_code == 404, (path[:60], reply.text[:200])
        assert set(reply.json()) == {"error"}


def test_head_answers_on_health_and_metadata(server: Server) -> None:
    import httpx

    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/strict", "/metrics"):
        reply = httpx.head(server.url + path, timeout=30)
        assert reply.status_code == 200, path


def test_huge_challenger_version_is_a_400(server: Server) -> None:
    import httpx

    url = f"{server.url}/v1/admin/models/strict/routing"
    for challenger in (10**23, "1" * 30):
        reply = httpx.put(url, json={"mode": "canary", "challenger": challenger}, timeout=30)
        assert reply.status_code == 400, reply.text
        assert "version" in reply.json()["error"]


def test_input_columns_named_like_log_columns_are_refused_unless_logging_is_off(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    frame, y = _frame(amount="timestamp", city="route")
    _register(home, "clash", frame, y)
    env = {"MODELLOOP_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "modelloop", "serve", "clash@champion", "--port", "0"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == InvalidInput.exit_code, done.stderr
    message = " ".join(done.stderr.split())
    assert "['timestamp', 'route']" in message and "--no-log" in message
    srv = start_server(home, ["clash@champion"], "--no-log")
    try:
        import httpx

        reply = httpx.post(
            f"{srv.url}/v1/models/clash/predict",
            json={"records": [{"timestamp": 0.1, "route": "a"}]},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
    finally:
        assert srv.terminate() == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_batch_delay_ms", float("nan")),
        ("max_batch_delay_ms", float("inf")),
        ("grace_s", -1.0),
        ("log_max_pending_rows", 10),
        ("ops_interval_s", 0.01),  # 0 turns the operational history off; else at least 0.05
        ("ops_interval_s", 7200.0),
        ("ops_interval_s", float("nan")),
    ],
)
def test_settings_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(InvalidInput, match=field):
        ServeConfig(**{field: value})


def test_an_embedded_app_whose_model_fails_to_load_says_so(tmp_path: Path) -> None:
    import threading
    import time

    import httpx
    import uvicorn

    from modelloop.serving import create_app
    from s3_support import free_port

    home = tmp_path / "home"
    app = create_app(["nosuch@champion"], settings=Settings(home=home))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"{base}/v2/health/live", timeout=5)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if live.status_code == 500:
                break
            time.sleep(0.05)
        assert live.status_code == 500 and "nosuch" in live.json()["error"]
        reply = httpx.post(f"{base}/v1/models/nosuch/predict", json={"records": []}, timeout=5)
        assert reply.status_code == 500
        assert "could not start" in reply.json()["error"]
        assert httpx.get(f"{base}/v2/health/ready", timeout=5).status_code == 400
    finally:
        server.should_exit = True
        thread.join(30)
