"""The loop end to end: a pipeline registers the flights model, `modelloop serve` answers real
traffic and logs it, labels come back as feedback, and a monitoring run reads what the server
wrote — drift of summer traffic against the winter training data, and live accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelloop._client import Client
from modelloop._config import Settings
from modelloop.data import FLIGHTS_FEATURES, load_flights
from serving.serving_support import post_many, start_server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flights" / "modelloop.yaml"

pytest.importorskip("fastapi")
pytest.importorskip("optuna")


def test_pipeline_to_server_to_monitoring(tmp_path: Path) -> None:
    from modelloop.monitoring import run_monitor
    from modelloop.pipeline import Pipeline

    home = tmp_path / "home"
    client = Client(Settings(home=home))
    quick = {
        "data.args.sample": 3000,
        "model.params.max_iter": 30,
        "tune.enabled": False,
        "explain.max_rows": 100,
        "gates.2": "segment_gap <= 0.5",
    }
    result = Pipeline.from_file(EXAMPLE, quick).run(client)
    assert result.status == "registered" and result.alias == "champion", result.reason

    july = load_flights([7]).sample(300, random_state=1).reset_index(drop=True)
    server = start_server(home, ["flights-delay@champion"])
    try:
        url = f"{server.url}/v1/models/flights-delay/predict"
        bodies = [
            {"id": f"jul-{i}", "records": [row]}
            for i, row in enumerate(july[list(FLIGHTS_FEATURES)].to_dict("records"))
        ]
        replies = post_many(url, bodies, concurrency=16)
        assert {r.status_code for r in replies} == {200}
        labels = [
            {"request_id": f"jul-{i}", "label": int(y)} for i, y in enumerate(july["delayed"])
        ]
        feedback = post_many(
            f"{server.url}/v1/models/flights-delay/feedback", [{"labels": labels}], concurrency=1
        )
        assert feedback[0].status_code == 200, feedback[0].text
    finally:
        assert server.terminate() == 0, server.log()

    out = run_monitor(client, "flights-delay", window="1h", store_result=False)
    assert out.result.drift.n_current == 300
    assert out.result.drift.n_tested > 0  # the served July rows were compared with training
    live = out.result.performance.overall
    assert live.n == 300
    served = [r.json()["predictions"][0] for r in replies]
    expected = sum(int(p == y) for p, y in zip(served, july["delayed"], strict=True)) / 300
    assert live.metrics["accuracy"] == pytest.approx(expected)
    client.close()
