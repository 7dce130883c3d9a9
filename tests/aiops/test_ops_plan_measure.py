"""``modelloop ops plan --measure``: the capacity of one replica from a load test of a real
``modelloop serve`` started on loopback, whose traffic never lands in the model's history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelloop.aiops import read_ops_history, write_ops_history


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model ``m`` registered as m@champion with an input example, and fifteen days of hourly
    history that never went near the latency SLO (so the history alone gives a lower bound)."""
    from sklearn.linear_model import LogisticRegression

    from serving.serving_support import register

    home = tmp_path_factory.mktemp("home")
    starts = pd.date_range("2026-01-05", periods=15 * 24, freq="1h", tz="UTC")
    rate = 2 + np.sin(np.arange(len(starts)) * 2 * np.pi / 24) + 1
    write_ops_history(
        home,
        "m",
        pd.DataFrame(
            {
                "timestamp": starts + pd.Timedelta("1h"),
                "interval_s": 3600.0,
                "requests": (rate * 3600).round(),
                "latency_p95_ms": 5.0,
                "errors_5xx": 0.0,
                "rejected": 0.0,
            }
        ),
    )
    X = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
    register(home, "m", LogisticRegression().fit(X, X["a"] > 20), X)
    return home


def _plan(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
    env["MODELLOOP_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "modelloop", "ops", "plan", "m", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_measured_capacity_drives_the_plan_and_leaves_the_history_alone(home: Path) -> None:
    rows_before = len(read_ops_history("m", None, home=home))
    out = _plan(home, "--measure", "--measure-seconds", "0.5", "--slo-ms", "2000",
                "--max-replicas", "50", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    cap, levels = plan["capacity"], plan["load_test"]
    assert cap["source"] == "measured" and cap["slo_ms"] == 2000
    assert "load test on loopback" in cap["detail"]
    # levels double their connections from one, each one really answered requests
    assert [lv["connections"] for lv in levels] == [2**i for i in range(len(levels))]
    assert all(lv["requests"] > 0 and lv["errors"] == 0 for lv in levels)
    best = max(lv["rps"] for lv in levels if lv["p95_ms"] <= 2000)
    assert cap["rps"] == pytest.approx(best, rel=1e-3)
    # the plan divides the forecast's upper band by the measured capacity
    peak = max(row["upper"] for row in plan["intervals"])
    assert max(s["replicas"] for s in plan["schedule"]) == max(1, -int(-peak // cap["rps"]))
    # the test's requests went to a scratch log root, not to the model's history
    assert len(read_ops_history("m", None, home=home)) == rows_before
    assert not (home / "predictions").exists()


def test_a_slo_no_replica_can_keep_and_conflicting_options_fail_clearly(home: Path) -> None:
    strict = _plan(home, "--measure", "--measure-seconds", "0.3", "--slo-ms", "0.001")
    assert strict.returncode == 2
    assert "cannot keep the SLO even with one connection" in strict.stderr
    both = _plan(home, "--measure", "--capacity", "10")
    assert both.returncode == 2 and "not both" in both.stderr
    ghost = _plan(home, "--measure", "--alias", "nope")
    assert ghost.returncode == 3 and "nope" in ghost.stderr
