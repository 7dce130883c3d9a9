"""``modelloop ops forecast|plan|simulate`` end to end on an ops history written to a temporary
home: JSON parsed and checked, the plan's files written, unknown models and bad options failing
with their exit codes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelloop.aiops import write_ops_history


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fifteen days of five-minute history of model ``m``: a midday peak, quieter weekends,
    p95 latency rising with load (over 100 ms above about 40 req/s)."""
    home = tmp_path_factory.mktemp("home")
    rng = np.random.default_rng(0)
    starts = pd.date_range("2026-01-05", periods=15 * 288, freq="5min", tz="UTC")
    hour = starts.hour + starts.minute / 60
    weekend = np.where(starts.dayofweek >= 5, 0.6, 1.0)
    rate = 5 + 45 * np.exp(-(((hour - 13) / 4) ** 2)) * weekend
    frame = pd.DataFrame(
        {
            "timestamp": starts + pd.Timedelta("5min"),
            "interval_s": 300.0,
            "requests": rng.poisson(rate * 300).astype(float),
            "latency_p95_ms": 20 + 2.0 * rate + rng.normal(0, 2, len(starts)),
            "errors_5xx": 0.0,
            "rejected": 0.0,
            "rss_bytes": 2.5e8,
        }
    )
    write_ops_history(home, "m", frame)
    return home


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "modelloop", "ops", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_forecast_and_plan_json(home: Path, tmp_path: Path) -> None:
    out = _run(home, "forecast", "m", "--horizon", "3h", "--json")
    assert out.returncode == 0, out.stderr
    fc = json.loads(out.stdout)
    assert fc["model_name"] == "m" and fc["step_s"] == 3600 and fc["horizon_steps"] == 3
    assert fc["baseline"] in ("seasonal_naive_weekly", "seasonal_naive_daily")
    assert fc["backtest"]["candidates"][fc["baseline"]]["mase"] == 1.0
    assert fc["mase"] <= 1.0
    # the history ends at midnight after a Monday; the forecast starts there
    assert [p["start"] for p in fc["forecast"]] == [
        "2026-01-20T00:00:00+00:00", "2026-01-20T01:00:00+00:00", "2026-01-20T02:00:00+00:00",
    ]  # fmt: skip
    assert all(p["lower"] <= p["mean"] <= p["upper"] for p in fc["forecast"])

    out = _run(
        home, "plan", "m", "--slo-ms", "100", "--horizon", "2h", "--lead-time", "5m",
        "--out", str(tmp_path / "plan"), "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    # capacity from the history: the fastest 6 intervals held within 100 ms (latency is
    # 20 + 2 * rate, so about 40 req/s), not a lower bound since the peak broke the SLO
    assert plan["capacity"]["source"] == "history" and not plan["capacity"]["lower_bound"]
    assert 30 < plan["capacity"]["rps"] < 42
    assert plan["rss_bytes_per_replica"] == 2.5e8
    assert plan["schedule"][0]["start"] == "2026-01-19T23:55:00+00:00"  # 5 min lead
    for row in plan["intervals"]:
        assert row["required"] == max(1, -(-row["upper"] // plan["capacity"]["rps"]))
    assert json.loads((tmp_path / "plan" / "plan.json").read_text()) == plan
    html = (tmp_path / "plan" / "plan.html").read_text()
    # plotly.js inside the page, nothing fetched
    assert "planned capacity" in html and len(html) > 1_000_000
    assert '<script src="http' not in html and "<script src='http" not in html


def test_plan_with_given_capacity_and_simulate(home: Path) -> None:
    out = _run(home, "simulate", "m", "--capacity", "10", "--warmup", "8d", "--json")
    assert out.returncode == 0, out.stderr
    sim = json.loads(out.stdout)
    assert [r["policy"] for r in sim["results"]] == ["predictive", "reactive"]
    assert all(r["minutes"] == 7 * 24 * 60 for r in sim["results"])
    assert all(r["replica_hours"] >= r["demand_hours"] > 0 for r in sim["results"])


def test_errors_have_exit_codes(home: Path) -> None:
    missing = _run(home, "forecast", "ghost")
    assert missing.returncode == 3
    assert "'ghost' has no operational history" in missing.stderr
    short = _run(home, "forecast", "m", "--since", "2026-01-19T12:00Z", "--step", "1h")
    assert short.returncode == 2
    assert "too short for the daily season" in short.stderr
    bad = _run(home, "plan", "m", "--capacity", "0")
    assert bad.returncode == 2 and "--capacity must be a positive" in bad.stderr


def test_plan_writes_manifests_whose_cron_triggers_follow_the_schedule(
    home: Path, tmp_path: Path
) -> None:
    import yaml
    from sklearn.linear_model import LogisticRegression

    from deploy.k8s_support import keda_replicas, validate_any
    from modelloop import Client, Settings

    X = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
    client = Client(Settings(home=home))
    try:
        with client.start_run("m") as run:
            run.log_model(LogisticRegression().fit(X, X["a"] > 20), "model", input_example=X)
        client.set_alias("m", "champion", client.register_model(run.run_id, "m").version)
    finally:
        client.close()
    out = _run(
        home, "plan", "m", "--capacity", "10", "--horizon", "16h",
        "--manifests", str(tmp_path / "k8s"), "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    docs = [yaml.safe_load(Path(p).read_text()) for p in plan["manifests"]]
    for doc in docs:
        validate_any(doc)
    deployment, scaled = docs[0], docs[-1]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "m@champion" in args
    # memory sized from the RSS of the history (2.5e8 bytes x 1.25 as request)
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == f"{int(-(-2.5e8 * 1.25 // 2**20))}Mi"
    # at each planned step's middle, KEDA's cron triggers ask for exactly the planned replicas
    steps = plan["schedule"]
    assert len(steps) >= 2 and max(s["replicas"] for s in steps) > plan["min_replicas"]
    for step, after in itertools.pairwise(steps):
        start, end = (pd.Timestamp(s["start"]).to_pydatetime() for s in (step, after))
        assert keda_replicas(scaled, start + (end - start) / 2) == step["replicas"]
    # an alias the store does not have: a clear error, exit 3, nothing written
    bad = _run(home, "plan", "m", "--capacity", "10", "--alias", "nope",
               "--manifests", str(tmp_path / "none"))  # fmt: skip
    assert bad.returncode == 3 and "nope" in bad.stderr
    assert not (tmp_path / "none").exists()
