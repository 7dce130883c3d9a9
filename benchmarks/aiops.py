"""Anomaly detection on the generated operational series (anomalies injected at known times),
side by side with a static threshold and a library baseline, and the cost of a scan; prints one
JSON line.

* ``anomaly_f1``: events of :func:`modelloop.aiops.scan_ops_history` over five seeds of
  :func:`modelloop.aiops.injected_series` (three weeks of 5-minute rows, seven injected
  anomalies each). A found anomaly is right when it overlaps an injection of its series (two
  intervals of slack); precision counts found anomalies, recall injections.
* ``static_threshold_f1``: the Prometheus-style rule: a series pages above its 99th percentile
  of the first week (below the 1st for requests), flags two intervals apart merged into events.
* ``baseline_library_f1``: scikit-learn's IsolationForest (the detector pyod wraps as IForest;
  not a new dependency) per series on (value, hour of day as sine and cosine), contamination
  1 %, flags merged the same way.
* ``median_delay_s``: seed 0, online: the history cut every interval after each injected start;
  the delay is the first cut at which the scan reports an anomaly overlapping it as current.
* ``scan_s``: ``scan_ops_history`` of 30 days of 10-second history for 10 models (the series
  recorded by ``modelloop serve``: requests, latency, errors), one after the other.

Demand forecasts and autoscaling, on :func:`modelloop.aiops.flights_demand` (a year of hourly
request rates):

* ``forecast_mase``: rolling origin, 2 h horizon. At ``--forecast-origins`` origins on days
  spread over the year after four weeks, the k-th at hour k mod 24 of a weekday k mod 7 (so
  every hour of the day and day of the week counts alike), :func:`forecast_demand` gets only
  the series before the origin and chooses its model by its own backtest, exactly as ``modelloop
  ops forecast`` does; its MAE over every origin and both steps, divided by the weekly seasonal
  naive's MAE at the same origins (the best naive on this series). ``forecast_mase_daily`` is
  the same against the daily naive; ``forecast_mase_90pct`` is its 5th-95th percentile over the
  origins resampled with replacement (a few hundred origins are still a small sample: on the
  old grid of 96, which fell on two hours of the day, arimax alone scored 1.08, against 0.83 at
  every hourly origin; the default is 192, 8 at each hour of the day, about 20 minutes);
  ``forecast_models_chosen`` counts the models chosen; ``candidate_mase`` gives each
  candidate's own MASE at those origins (fitted on the three weeks before each, arimax on
  four). ``naive_weekly_mae`` / ``naive_daily_mae`` are
  the two naives' 2 h MAE over *every* hourly origin of the year (req/s).
* ``slo_violation_minutes_*`` and ``replica_hours_*``: :func:`simulate_autoscaling` over the
  year after a two-week warm-up, on a one-minute grid (each hour's rate held for the hour),
  replicas of 5 req/s that take 2 minutes to start. *predictive*: the rolling plan (weekly
  naive, upper quantile 0.95 of its conformal band, 2 min lead time, 10 min stabilisation) with
  a reactive floor at 90 % utilisation (the deployed form: the plan and utilisation feed one
  HPA); *reactive*: the HPA-like policy at 70 % target utilisation, metrics 60 s old, 15 s sync,
  10 % tolerance, 5 min scale-down stabilisation. ``*_plan_only`` is the plan without the floor.

Usage: python benchmarks/aiops.py [--seeds 5] [--skip-scan] [--forecast-origins 192]
       [--skip-forecast] [--skip-autoscaling]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelloop.aiops import injected_series, scan_ops_history, write_ops_history
from modelloop.aiops._anomaly import _runs

SLACK = 2  # intervals


def _events_score(found: list[tuple[str, pd.Timestamp, pd.Timestamp]], truth: Any, step: Any):  # type: ignore[no-untyped-def]
    slack = SLACK * step
    right = sum(
        any(s == i.series and a <= i.end + slack and b >= i.start - slack for i in truth)
        for s, a, b in found
    )
    hit = sum(
        any(s == i.series and a <= i.end + slack and b >= i.start - slack for s, a, b in found)
        for i in truth
    )
    return right, len(found), hit, len(truth)


def _f1(parts: list[tuple[int, int, int, int]]) -> tuple[float, float, float]:
    right, found, hit, truth = (sum(p[k] for p in parts) for k in range(4))
    precision = right / found if found else 0.0
    recall = hit / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _as_events(column: str, index: pd.DatetimeIndex, flags: np.ndarray) -> list[Any]:
    return [(column, index[a], index[b]) for a, b in _runs(flags, bridge=2)]


def _static(frame: pd.DataFrame, step_s: float) -> list[Any]:
    week = int(7 * 86_400 / step_s)
    out = []
    for column in frame.columns:
        ref = frame[column].iloc[:week]
        flags = frame[column].to_numpy() > ref.quantile(0.99)
        if column == "requests":
            flags |= frame[column].to_numpy() < ref.quantile(0.01)
        out += _as_events(column, frame.index, flags)
    return out


def _iforest(frame: pd.DataFrame, seed: int) -> list[Any]:
    from sklearn.ensemble import IsolationForest

    hour = frame.index.hour + frame.index.minute / 60
    out = []
    for column in frame.columns:
        x = np.column_stack(
            [frame[column], np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]
        )
        model = IsolationForest(contamination=0.01, random_state=seed).fit(x)
        out += _as_events(column, frame.index, model.predict(x) == -1)
    return out


def _delays(tmp: Path) -> list[float]:
    series = injected_series(seed=0)
    frame, step = series.frame, pd.Timedelta(seconds=series.step_s)
    delays = []
    for n, inj in enumerate(series.injections):
        start = frame.index.get_loc(inj.start)
        for k in range(0, 13):
            home = tmp / f"delay-{n}-{k}"
            write_ops_history(home, "m", frame.iloc[: start + k + 1][[inj.series]])
            current = scan_ops_history("m", home=home).current()
            if any(a.series == inj.series and a.end >= inj.start - SLACK * step for a in current):
                delays.append(k * series.step_s)
                break
    return delays


def _forecast_figures(origins: int) -> dict[str, Any]:
    from modelloop.aiops import flights_demand, forecast_demand
    from modelloop.aiops._forecast import MODELS, _fit_predict, train_points

    demand = flights_demand()
    y = demand.to_numpy()
    h, daily, weekly = 2, 24, 168
    every = np.arange(4 * weekly, len(y) - h)
    truth = np.stack([y[every + j] for j in range(h)], axis=1)
    naive_w = np.stack([y[every + j - weekly] for j in range(h)], axis=1)
    naive_d = np.stack([y[every + j - daily] for j in range(h)], axis=1)
    # origins on days spread over the year after four weeks, the k-th at hour k mod 24 of a day
    # of the week k mod 7: every hour and weekday equally often (an even grid of 96 over the
    # year falls on two hours of the day only, and the error of a 2 h forecast depends on the
    # hour far more than on the day)
    k = np.arange(origins)
    last_day = (len(y) - h - 24) // daily - 6
    days = np.linspace(4 * weekly // daily, last_day, origins).round().astype(int)
    days += (k - days) % 7
    picks = days * daily + k % daily
    errs: dict[str, list[float]] = {name: [] for name in ("chosen", *MODELS)}
    chosen: dict[str, int] = {}
    for o in picks:
        fc = forecast_demand(demand.iloc[:o], "2h")
        chosen[fc.model] = chosen.get(fc.model, 0) + 1
        errs["chosen"] += list(np.abs(y[o : o + h] - fc.frame["mean"].to_numpy()))
        for name in MODELS:
            start = o - train_points(name, weekly, 3, weekly)
            pred = _fit_predict(name, y[start:o], h, daily, weekly)
            errs[name] += list(np.abs(y[o : o + h] - np.maximum(pred, 0)))
    mae = {k: float(np.mean(v)) for k, v in errs.items()}
    # how much the figure owes to which origins were drawn: the ratio over origins resampled
    # with replacement (both steps of an origin together), 5th and 95th percentiles
    chosen_at = np.asarray(errs["chosen"]).reshape(-1, h).mean(axis=1)
    naive_at = np.asarray(errs["seasonal_naive_weekly"]).reshape(-1, h).mean(axis=1)
    draws = np.random.default_rng(0).integers(0, len(picks), (2000, len(picks)))
    ratios = chosen_at[draws].mean(axis=1) / naive_at[draws].mean(axis=1)
    return {
        "forecast_mase": round(mae["chosen"] / mae["seasonal_naive_weekly"], 3),
        "forecast_mase_90pct": [round(float(q), 3) for q in np.quantile(ratios, [0.05, 0.95])],
        "forecast_mase_daily": round(mae["chosen"] / mae["seasonal_naive_daily"], 3),
        "forecast_models_chosen": chosen,
        "forecast_origins": int(origins),
        "candidate_mase": {k: round(mae[k] / mae["seasonal_naive_weekly"], 3) for k in MODELS},
        "naive_weekly_mae": round(float(np.mean(np.abs(truth - naive_w))), 3),
        "naive_daily_mae": round(float(np.mean(np.abs(truth - naive_d))), 3),
    }


def _autoscaling_figures() -> dict[str, Any]:
    from modelloop.aiops import (
        PredictivePolicy,
        ReactivePolicy,
        flights_demand,
        simulate_autoscaling,
    )

    demand = flights_demand()
    kw: dict[str, Any] = {"capacity_rps": 5.0, "startup_s": 120.0, "warmup_s": 14 * 86_400.0}
    predictive = simulate_autoscaling(demand, PredictivePolicy(), **kw)
    plan_only = simulate_autoscaling(demand, PredictivePolicy(reactive_floor=None), **kw)
    reactive = simulate_autoscaling(demand, ReactivePolicy(), **kw)
    return {
        "slo_violation_minutes_predictive": predictive.violation_minutes,
        "slo_violation_minutes_reactive": reactive.violation_minutes,
        "replica_hours_predictive": round(predictive.replica_hours, 1),
        "replica_hours_reactive": round(reactive.replica_hours, 1),
        "slo_violation_minutes_plan_only": plan_only.violation_minutes,
        "replica_hours_plan_only": round(plan_only.replica_hours, 1),
        "demand_replica_hours": round(reactive.demand_hours, 1),
        "simulated_minutes": reactive.minutes,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--skip-scan", action="store_true")
    parser.add_argument("--forecast-origins", type=int, default=192)
    parser.add_argument("--skip-forecast", action="store_true")
    parser.add_argument("--skip-autoscaling", action="store_true")
    args = parser.parse_args()
    extra: dict[str, Any] = {}
    if not args.skip_forecast:
        extra.update(_forecast_figures(args.forecast_origins))
    if not args.skip_autoscaling:
        extra.update(_autoscaling_figures())
    ours, static, forest = [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for seed in range(args.seeds):
            series = injected_series(seed=seed)
            step = pd.Timedelta(seconds=series.step_s)
            write_ops_history(tmp / f"s{seed}", "m", series.frame)
            found = [
                (a.series, a.start, a.end)
                for a in scan_ops_history("m", home=tmp / f"s{seed}").anomalies
            ]
            ours.append(_events_score(found, series.injections, step))
            static.append(
                _events_score(_static(series.frame, series.step_s), series.injections, step)
            )
            forest.append(_events_score(_iforest(series.frame, seed), series.injections, step))
        delays = _delays(tmp)
        scan_s = None
        if not args.skip_scan:
            month = injected_series(days=30, step_s=10.0, seed=0).frame
            for m in range(10):
                write_ops_history(tmp / "scan", f"model-{m}", month)
            t0 = time.perf_counter()
            for m in range(10):
                scan_ops_history(f"model-{m}", home=tmp / "scan")
            scan_s = round(time.perf_counter() - t0, 2)
    p, r, f1 = _f1(ours)
    sp, sr, sf1 = _f1(static)
    bp, br, bf1 = _f1(forest)
    print(
        json.dumps(
            {
                "anomaly_f1": round(f1, 3),
                "anomaly_precision": round(p, 3),
                "anomaly_recall": round(r, 3),
                "static_threshold_f1": round(sf1, 3),
                "static_threshold_precision": round(sp, 3),
                "static_threshold_recall": round(sr, 3),
                "baseline_library_f1": round(bf1, 3),
                "baseline_library": "sklearn IsolationForest (value, hour of day)",
                "baseline_library_precision": round(bp, 3),
                "baseline_library_recall": round(br, 3),
                "median_delay_s": statistics.median(delays) if delays else None,
                "delays_found": len(delays),
                "scan_s": scan_s,
                "scan_rows": 10 * 30 * 8640,
                **extra,
                "seeds": args.seeds,
                "python": platform.python_version(),
                "cpus": __import__("os").cpu_count(),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
