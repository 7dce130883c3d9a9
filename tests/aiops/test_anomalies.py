"""The anomaly detector on the series that ship with the package: injected anomalies found with
the right kind and span, a clean series' daily peak left alone, bad input refused clearly, and
the alert rule announcing once and resolving over a history written to disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelloop.aiops import (
    OpsAnomalyRule,
    detect_anomalies,
    flights_demand,
    injected_series,
    scan_ops_history,
    write_ops_history,
)
from modelloop.exceptions import InvalidInput, NotFound
from modelloop.monitoring import AlertManager, MonitorResult

STEP = pd.Timedelta(minutes=5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_anomalies_are_found_with_their_span(tmp_path: Path, seed: int) -> None:
    series = injected_series(seed=seed)
    write_ops_history(tmp_path, "m", series.frame)
    found = scan_ops_history("m", home=tmp_path).anomalies
    for inj in series.injections:
        # within two intervals; a variance change within six (30 min of its 4 h): its first and
        # last points may happen to look normal, and nothing can tell them from normal ones
        tol = (6 if inj.kind == "variance_change" else 2) * STEP
        hits = [
            a
            for a in found
            if a.series == inj.series
            and abs(a.start - inj.start) <= tol
            and abs(a.end - inj.end) <= tol
        ]
        assert len(hits) == 1, (inj, [a.describe() for a in found if a.series == inj.series])
        (hit,) = hits
        assert hit.kind == inj.kind, (inj, hit)
        # the band holds the expectation and not the observed value
        assert hit.low <= hit.expected <= hit.high
        assert not hit.low <= hit.observed <= hit.high
    unmatched = [
        a
        for a in found
        if not any(
            a.series == i.series and a.start <= i.end + 2 * STEP and a.end >= i.start - 2 * STEP
            for i in series.injections
        )
    ]
    assert len(unmatched) <= 1, [a.describe() for a in unmatched]


def test_replicas_sharing_a_root_are_scanned_as_one_service(tmp_path: Path) -> None:
    """Three replicas, each recording at its own phase, hold one series split between them:
    the scan combines their rows per interval and finds exactly what it finds in the whole."""
    from modelloop.aiops import read_ops_history

    series = injected_series(seed=0)
    whole = series.frame
    write_ops_history(tmp_path / "one", "m", whole)
    expected = scan_ops_history("m", home=tmp_path / "one").anomalies
    assert expected  # the injections are there to be found
    rng = np.random.default_rng(7)
    shares = {
        col: rng.multinomial(whole[col].astype(int), [0.5, 0.3, 0.2])
        for col in ("requests", "errors_5xx")
    }  # one row per interval, a column per replica
    for r, phase_s in enumerate((0, 61, 143)):  # each within half an interval of the first
        part = whole.copy()
        part.index = part.index + pd.Timedelta(seconds=phase_s)
        for col, split in shares.items():
            part[col] = split[:, r].astype(float)
        part["replica"] = f"host-{100 + r}-abcd"
        write_ops_history(tmp_path / "three", "m", part)
    stored = read_ops_history("m", home=tmp_path / "three")
    assert len(stored) == 3 * len(whole) and stored["replica"].nunique() == 3
    scan = scan_ops_history("m", home=tmp_path / "three")
    assert scan.step_s == 300 and scan.rows == len(whole)
    assert "the rows of 3 replicas combined into one row per interval" in scan.notes
    assert [(a.series, a.kind, a.start, a.end) for a in scan.anomalies] == [
        (a.series, a.kind, a.start, a.end) for a in expected
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_daily_peak_of_a_clean_series_raises_nothing(tmp_path: Path, seed: int) -> None:
    clean = injected_series(seed=seed, inject=False)
    frame = clean.frame
    # the peak is real: midday traffic is several times the night's, latency follows it
    by_hour = frame.groupby(frame.index.hour).mean()
    assert by_hour["requests"].max() > 3 * by_hour["requests"].min()
    write_ops_history(tmp_path, "m", frame)
    found = scan_ops_history("m", home=tmp_path).anomalies
    assert not [a for a in found if 10 <= a.start.hour <= 16], [a.describe() for a in found]
    if seed == 1:
        assert found == ()
    # a static threshold at the 99th percentile of the first week pages at the peaks
    first_week = frame["requests"].iloc[: 7 * 288]
    over = frame["requests"] > first_week.quantile(0.99)
    assert over.sum() > 20


def _series(n: int, step_s: float = 60.0) -> pd.Series:
    index = pd.date_range("2026-01-01", periods=n, freq=pd.Timedelta(seconds=step_s), tz="UTC")
    return pd.Series(np.random.default_rng(0).normal(10, 1, n), index=index, name="x")


def test_bad_input_gets_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"'x' has 10 points; .* at least 24"):
        detect_anomalies(_series(10))
    with pytest.raises(InvalidInput, match="a season of 24 h needs at least two of it"):
        detect_anomalies(_series(100), seasons=[86_400])
    gap = _series(100).drop(_series(100).index[50:55])
    with pytest.raises(InvalidInput, match=r"1 gap.* first of 360 s after 2026-01-01 00:49"):
        detect_anomalies(gap)
    nan = _series(100)
    nan.iloc[[7, 9]] = np.nan
    with pytest.raises(
        InvalidInput, match="2 missing or infinite values, the first at 2026-01-01 00:07"
    ):
        detect_anomalies(nan)
    with pytest.raises(InvalidInput, match="needs a DatetimeIndex"):
        detect_anomalies(pd.Series(np.ones(50)))
    with pytest.raises(InvalidInput, match="positive values for the log transform"):
        detect_anomalies(_series(50) - 100, transform="log")
    with pytest.raises(InvalidInput, match="direction must be"):
        detect_anomalies(_series(50), direction="sideways")  # type: ignore[arg-type]


def test_history_too_short_or_missing(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="'ghost' has no operational history"):
        scan_ops_history("ghost", home=tmp_path)
    frame = injected_series().frame.iloc[:20]
    write_ops_history(tmp_path, "short", frame)
    with pytest.raises(InvalidInput, match="no 24 consecutive intervals"):
        scan_ops_history("short", home=tmp_path)


def test_cli_reports_anomalies_and_errors(tmp_path: Path) -> None:
    series = injected_series()
    write_ops_history(tmp_path, "m", series.frame)
    env = {**os.environ, "MODELLOOP_HOME": str(tmp_path)}
    run = [sys.executable, "-m", "modelloop", "ops", "anomalies"]
    out = subprocess.run(
        [*run, "m", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    scan = json.loads(out.stdout)
    kinds = {(a["series"], a["kind"]) for a in scan["anomalies"]}
    assert {(i.series, i.kind) for i in series.injections} <= kinds
    assert scan["rows"] == len(series.frame)
    since = subprocess.run(
        [*run, "m", "--since", "2026-01-20T00:00Z", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert since.returncode == 0, since.stderr
    assert all(a["start"] >= "2026-01-20" for a in json.loads(since.stdout)["anomalies"])
    missing = subprocess.run([*run, "ghost"], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0
    assert "'ghost' has no operational history" in missing.stderr


def test_alert_is_announced_once_and_resolves(tmp_path: Path) -> None:
    frame = injected_series().frame
    shift = pd.Timestamp("2026-01-17 15:00", tz="UTC")  # a latency level shift of two hours
    manager = AlertManager([OpsAnomalyRule(since=None, home=tmp_path)])
    write_ops_history(tmp_path, "m", frame[: shift - STEP])
    assert manager.evaluate(MonitorResult("m", timestamp=1)) == []  # quiet: nothing to say
    write_ops_history(tmp_path, "m", frame[shift : shift + pd.Timedelta(minutes=30)])
    events = manager.evaluate(MonitorResult("m", timestamp=2))
    assert [(e.rule, e.status) for e in events] == [("ops_anomaly", "firing")]
    assert "latency_p95_ms: level shift from 2026-01-17 15:00" in events[0].message
    write_ops_history(
        tmp_path, "m", frame[shift + pd.Timedelta(minutes=35) : shift + pd.Timedelta(minutes=90)]
    )
    assert manager.evaluate(MonitorResult("m", timestamp=3)) == []  # still firing: said once
    write_ops_history(
        tmp_path, "m", frame[shift + pd.Timedelta(minutes=95) : shift + pd.Timedelta(hours=6)]
    )
    events = manager.evaluate(MonitorResult("m", timestamp=4))
    assert [(e.rule, e.status) for e in events] == [("ops_anomaly", "resolved")]


def test_flights_demand_is_a_year_of_hourly_request_rates() -> None:
    demand = flights_demand()
    assert demand.index.tz is not None and len(demand) > 8700
    assert demand.index.to_series().diff().dropna().dt.total_seconds().median() == 3600
    assert demand.min() == 0 and 30 < demand.max() < 100
    by_hour = demand.groupby(demand.index.tz_convert("America/New_York").hour).mean()
    assert by_hour.idxmin() in (0, 1, 2, 3, 4) and 6 <= by_hour.idxmax() <= 20
