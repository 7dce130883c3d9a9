"""The autoscaling replay on series small enough to check by hand: the reactive controller's
delay, start-up and growth, the predictive plan's lead time and stabilisation, and the counts of
SLO-violating minutes and replica-hours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelloop.aiops import (
    PredictivePolicy,
    ReactivePolicy,
    flights_demand,
    simulate_autoscaling,
)
from modelloop.exceptions import InvalidInput


def test_reactive_counts_by_hand() -> None:
    index = pd.date_range("2026-03-02", periods=16, freq="min", tz="UTC")
    demand = pd.Series([4.0] * 8 + [16.0] * 8, index=index)
    policy = ReactivePolicy(
        target_utilisation=0.5, metric_delay_s=60, sync_s=60, tolerance=0, stabilisation_s=0
    )
    result = simulate_autoscaling(demand, policy, capacity_rps=10, startup_s=120, warmup_s=0)
    # minute 8: demand jumps to 16 (1 replica: saturated); minute 9 sees it, asks for 2, ready
    # at 11 (20 req/s: 80 %); minute 12 sees 80 %, asks for ceil(2 * 0.8 / 0.5) = 4, ready at 14
    assert list(result.frame["wanted"]) == [1] * 9 + [2] * 3 + [4] * 4
    assert list(result.frame["ready"]) == [1] * 11 + [2] * 3 + [4] * 2
    assert result.violation_minutes == 3  # minutes 8, 9, 10: 16 req/s on 10 of capacity
    assert result.replica_hours == pytest.approx(31 / 60)
    assert result.peak_replicas == 4
    assert result.demand_hours == pytest.approx((8 * 4 + 8 * 16) / 10 / 60)


def _daily_steps(days: int) -> pd.Series:
    index = pd.date_range("2026-03-02", periods=days * 24, freq="h", tz="UTC")
    return pd.Series(np.where(index.hour >= 12, 12.0, 1.0), index=index)


def test_predictive_plan_is_ready_before_the_step_and_keeps_it_after() -> None:
    demand = _daily_steps(3)
    plan_only = PredictivePolicy(season="daily", reactive_floor=None)
    result = simulate_autoscaling(
        demand, plan_only, capacity_rps=5, startup_s=120, warmup_s=2 * 86_400
    )
    wanted = result.frame["wanted"].to_numpy()
    # 1 replica until 11:58, then ceil(12 / 5) = 3 asked for, ready at 12:00 when demand rises
    assert wanted[: 11 * 60 + 58].max() == 1 and wanted[11 * 60 + 58] == 3
    assert result.frame["ready"].to_numpy()[12 * 60] == 3
    assert result.violation_minutes == 0
    assert result.replica_hours == pytest.approx((718 * 1 + 722 * 3) / 60)
    # the reactive controller pays the metric delay and start-up at every rise
    reactive = simulate_autoscaling(
        demand, ReactivePolicy(), capacity_rps=5, startup_s=120, warmup_s=2 * 86_400
    )
    assert reactive.violation_minutes >= 3
    # with the reactive floor the plan stays as good, and costs at least as much
    floored = simulate_autoscaling(
        demand, PredictivePolicy(season="daily"), capacity_rps=5, startup_s=120,
        warmup_s=2 * 86_400,
    )  # fmt: skip
    assert floored.violation_minutes == 0
    assert floored.replica_hours >= result.replica_hours


@pytest.mark.slow
def test_predictive_beats_reactive_on_the_flights_year() -> None:
    demand = flights_demand()
    kw = {"capacity_rps": 5.0, "startup_s": 120.0}
    predictive = simulate_autoscaling(demand, PredictivePolicy(), **kw)
    reactive = simulate_autoscaling(demand, ReactivePolicy(), **kw)
    assert predictive.minutes == reactive.minutes > 300_000
    assert predictive.violation_minutes <= 0.2 * reactive.violation_minutes
    assert predictive.replica_hours <= reactive.replica_hours


def test_bad_replays_are_refused() -> None:
    demand = _daily_steps(3)
    with pytest.raises(InvalidInput, match="not longer than the warm-up"):
        simulate_autoscaling(demand, ReactivePolicy(), capacity_rps=5, warmup_s=10 * 86_400)
    with pytest.raises(InvalidInput, match="capacity must be a positive"):
        simulate_autoscaling(demand, ReactivePolicy(), capacity_rps=0)
    with pytest.raises(InvalidInput, match="too few known errors"):
        # a weekly naive with two days of history has nothing to go on
        simulate_autoscaling(demand, PredictivePolicy(), capacity_rps=5, warmup_s=86_400 * 2)
    with pytest.raises(InvalidInput, match="NaN"):
        simulate_autoscaling(demand.where(demand.index.hour != 5), ReactivePolicy(), capacity_rps=5)
