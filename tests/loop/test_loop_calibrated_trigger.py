"""History-calibrated drift end to end: a registered model's prediction log → `monitor calibrate`
→ `monitor run` / `monitor report` show distance, learned range and verdict → the loop's
``calibrated_drift`` trigger fires on a drifted window and stays quiet on a healthy one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loop_support import MODEL, breast_cancer, ms, serve_rows, write_pipeline
from typer.testing import CliRunner

from modelloop.cli import app
from modelloop.loop import parse_policy
from modelloop.loop._actions import PipelineActions
from modelloop.loop._controller import Controller
from modelloop.monitoring import CALIBRATION_TAG, calibrate_model, run_monitor

HOUR = 3_600_000
# an hour boundary six hours back, so that the CLI's "last 6h" (real clock) holds the drift
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def _healthy(frame: Any, n: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    rows = frame.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    features = [c for c in frame.columns if c != "target"]
    rows[features] = rows[features] * rng.normal(1.0, 0.01, (n, len(features)))
    return rows


@pytest.fixture
def served(
    any_client: Any, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Champion v1 trained on 400 rows; 8 days of healthy traffic, 150 rows per 6 hours; on
    every store backend (the CLI below uses the same store)."""
    from modelloop.pipeline import Pipeline

    client = any_client
    monkeypatch.setenv("MODELLOOP_STORE_URL", store_url)
    frame = breast_cancer()
    pipeline_file = write_pipeline(tmp_path, frame.iloc[:400])
    assert Pipeline.from_file(pipeline_file).run(client).registered_version == 1
    start = ms(NOW - timedelta(days=8))
    for w in range(8 * 4):
        serve_rows(
            client,
            _healthy(frame, 150, w),
            version=1,
            route="champion",
            start_ms=start + w * 6 * HOUR,
            span_ms=6 * HOUR,
        )
    return {"client": client, "file": pipeline_file, "frame": frame}


def _policy() -> Any:
    return parse_policy(
        {
            "model": MODEL,
            "triggers": {"calibrated_drift": 0.2},
            "training": {"source": "log", "window": "30d", "min_labelled_rows": 200},
            "gate": {"metric": "accuracy", "window": "30d", "min_rows": 100},
        }
    )


def test_calibrated_verdict_reaches_cli_report_and_loop(served, tmp_path: Path) -> None:
    client, frame = served["client"], served["frame"]
    mv, cal = calibrate_model(
        client, MODEL, history="7d", window="6h", now=NOW - timedelta(hours=6)
    )
    assert mv.tags[CALIBRATION_TAG] and cal.n_windows == 28 and cal.window == "6h"
    features = [c for c in frame.columns if c != "target"]
    assert set(cal.columns) == set(features)  # inputs only, not the model's outputs

    # a healthy window: within the learned ranges, nothing fires
    serve_rows(client, _healthy(frame, 150, 99), version=1, route="champion",
               start_ms=ms(NOW - timedelta(hours=6)), span_ms=6 * HOUR - 1)  # fmt: skip
    quiet = run_monitor(client, MODEL, window="6h", now=NOW)
    assert quiet.result.calibrated is not None
    assert quiet.result.calibrated.share_flagged < 0.2
    ctl = Controller(client.store, _policy(), PipelineActions(client, served["file"]),
                     home=client.settings.home, holder="t", clock=lambda: ms(NOW) + 1)  # fmt: skip
    assert not ctl.tick(dry_run=True).planned

    # a drifted window: most inputs are outside their normal range, the trigger fires
    drifted = _healthy(frame, 150, 100)
    drifted[features] = drifted[features] * 1.4
    later = NOW + timedelta(hours=6)
    serve_rows(client, drifted, version=1, route="champion", start_ms=ms(NOW),
               span_ms=6 * HOUR - 1)  # fmt: skip
    loud = run_monitor(client, MODEL, window="6h", now=later)
    cal_result = loud.result.calibrated
    assert cal_result is not None and cal_result.share_flagged >= 0.5
    col = cal_result[features[0]]
    assert col.flagged and col.distance > col.high and col.verdict == "above its normal range"
    stored = client.store.list_monitoring_results(MODEL, limit=1)[-1]
    assert stored.payload["calibrated"]["share_flagged"] == cal_result.share_flagged
    ctl = Controller(
        client.store,
        _policy(),
        PipelineActions(client, served["file"]),
        home=client.settings.home,
        holder="t",
        clock=lambda: ms(later) + 1,
    )
    planned = ctl.tick(dry_run=True).planned
    assert planned and "history-calibrated range" in planned[0], planned

    # the CLI: calibrate (JSON), run (table with the learned range), report (HTML section)
    runner = CliRunner()
    res = runner.invoke(app, ["monitor", "calibrate", MODEL, "--history", "7d", "--window", "6h",
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["window"] == "6h"
    res = runner.invoke(app, ["monitor", "run", MODEL, "-w", "6h"])
    assert res.exit_code == 0, res.output
    assert "history-calibrated" in res.stdout and "normal range" in res.stdout
    out = tmp_path / "report.html"
    res = runner.invoke(app, ["monitor", "report", MODEL, "-w", "6h", "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "<h2>History-calibrated verdict</h2>" in page and "learned normal range" in page
