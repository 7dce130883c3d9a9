"""Metric logging: history, latest values, NaN and infinities, atomicity."""

from __future__ import annotations

import math

import pytest

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.store import Experiment, Metric, Run
from modelloop.store._sql import SqlStore


def test_history_is_ordered_by_step_then_timestamp(store: SqlStore, run: Run) -> None:
    logged = [
        Metric("loss", 0.5, step=2, timestamp=10),
        Metric("loss", 0.9, step=0, timestamp=30),
        Metric("loss", 0.7, step=1, timestamp=5),
        Metric("loss", 0.6, step=1, timestamp=3),
        Metric("acc", 0.1, step=0, timestamp=1),
    ]
    store.log_metrics(run.run_id, logged[:2])
    store.log_metrics(run.run_id, logged[2:])
    assert store.get_metric_history(run.run_id, "loss") == [
        Metric("loss", 0.9, 0, 30),
        Metric("loss", 0.6, 1, 3),
        Metric("loss", 0.7, 1, 5),
        Metric("loss", 0.5, 2, 10),
    ]
    assert store.get_metric_history(run.run_id, "absent") == []
    assert store.count_metric_values(run.run_id) == 5
    assert store.count_metric_values(run.run_id, "loss") == 4


def test_latest_value_is_highest_step_then_latest_timestamp(store: SqlStore, run: Run) -> None:
    rid = run.run_id
    store.log_metrics(rid, [Metric("m", 1.0, step=5, timestamp=100)])
    store.log_metrics(rid, [Metric("m", 2.0, step=4, timestamp=999)])  # older step: ignored
    assert store.get_run(rid).metrics == {"m": 1.0}
    store.log_metrics(rid, [Metric("m", 3.0, step=5, timestamp=101)])  # same step, later
    assert store.get_run(rid).metrics == {"m": 3.0}
    store.log_metrics(rid, [Metric("m", 4.0, step=5, timestamp=50)])  # same step, earlier
    assert store.get_run(rid).metrics == {"m": 3.0}
    # within one batch the same rule applies, whatever the order of the values
    store.log_metrics(rid, [Metric("m", 9.0, 9, 1), Metric("m", 7.0, 7, 2), Metric("n", 1.0, 0, 0)])
    assert store.get_run(rid).metrics == {"m": 9.0, "n": 1.0}
    assert store.count_metric_values(rid, "m") == 6


def test_nan_and_infinities_round_trip(store: SqlStore, run: Run) -> None:
    rid = run.run_id
    values = [math.nan, math.inf, -math.inf, 0.0, -1.5e308]
    store.log_metrics(rid, [Metric("v", v, step=i, timestamp=i) for i, v in enumerate(values)])
    store.log_metrics(rid, [Metric("last_nan", math.nan), Metric("last_inf", -math.inf)])
    history = [m.value for m in store.get_metric_history(rid, "v")]
    assert math.isnan(history[0])
    assert history[1:] == [math.inf, -math.inf, 0.0, -1.5e308]
    latest = store.get_run(rid).metrics
    assert math.isnan(latest["last_nan"]) and latest["last_inf"] == -math.inf
    assert latest["v"] == -1.5e308


def test_metric_batch_is_all_or_nothing(store: SqlStore, run: Run) -> None:
    with pytest.raises(InvalidInput, match="metric key"):
        store.log_metrics(run.run_id, [Metric("ok", 1.0), Metric("", 2.0)])
    with pytest.raises(InvalidInput):
        store.log_metrics(run.run_id, [Metric("ok", "not a number")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.log_metrics(run.run_id, [("ok", 1.0)])  # type: ignore[list-item]
    assert store.count_metric_values(run.run_id) == 0
    assert store.get_run(run.run_id).metrics == {}


def test_metrics_of_missing_run(store: SqlStore, run: Run) -> None:
    with pytest.raises(NotFound):
        store.log_metrics("0" * 32, [Metric("m", 1.0)])
    with pytest.raises(NotFound):
        store.get_metric_history("0" * 32, "m")
    with pytest.raises(NotFound):
        store.count_metric_values("0" * 32)
    store.log_metrics(run.run_id, [])  # nothing to write, but the run exists
    assert store.count_metric_values(run.run_id) == 0


def test_large_batch(store: SqlStore, exp: Experiment) -> None:
    run = store.create_run(exp.experiment_id)
    batch = [Metric(f"k{i % 7}", i / 3, step=i, timestamp=i) for i in range(5000)]
    store.log_metrics(run.run_id, batch)
    assert store.count_metric_values(run.run_id) == 5000
    latest = store.get_run(run.run_id).metrics
    assert latest == {f"k{k}": max(i for i in range(5000) if i % 7 == k) / 3 for k in range(7)}
