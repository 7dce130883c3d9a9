"""The autoscaling plan's arithmetic on hand-made numbers: replicas from the upper quantile and
the capacity, asked for a lead time ahead, kept a stabilisation window after; and the capacity
of one replica read from a hand-made ops history."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from modelloop.aiops import (
    DemandForecast,
    PlanStep,
    capacity_from_history,
    plan_replicas,
)
from modelloop.exceptions import InvalidInput

T0 = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def _forecast(upper: list[float]) -> DemandForecast:
    index = pd.date_range(T0, periods=len(upper), freq="h", name="start")
    frame = pd.DataFrame(
        {"mean": np.array(upper) * 0.8, "lower": np.array(upper) * 0.6, "upper": upper},
        index=index,
    )
    return DemandForecast(
        model="seasonal_naive_weekly", step_s=3600.0, horizon_steps=len(upper), quantile=0.95,
        frame=frame, backtest={"seasonal_naive_weekly": {"mae": 1.0, "mase": 1.0}},
        baseline="seasonal_naive_weekly", windows=8, train_points=504, history_end=T0,
    )  # fmt: skip


def _at(seconds: float) -> datetime:
    return (T0 + pd.Timedelta(seconds=seconds)).to_pydatetime()


def test_plan_scales_up_a_lead_time_ahead_and_down_after_stabilisation() -> None:
    plan = plan_replicas(_forecast([4.0, 12.0, 3.0]), 5.0, lead_time=120, stabilisation=600)
    # ceil(4/5) = 1, ceil(12/5) = 3, ceil(3/5) = 1
    assert list(plan.intervals["required"]) == [1, 3, 1]
    assert plan.schedule == (
        PlanStep(_at(-120), 1),  # the plan acts a lead time before its first step
        PlanStep(_at(3600 - 120), 3),  # ready when the 3-replica hour starts
        PlanStep(_at(7200 + 600), 1),  # kept 10 minutes after it ends
    )
    assert all(s.start.tzinfo is not None and s.start.utcoffset().total_seconds() == 0
               for s in plan.schedule)  # fmt: skip
    assert plan.peak_replicas == 3
    doc = plan.to_dict()
    assert doc["capacity"]["source"] == "given" and doc["lead_time_s"] == 120
    assert [s["replicas"] for s in doc["schedule"]] == [1, 3, 1]


def test_plan_headroom_bounds_and_short_dips() -> None:
    # a one-hour dip shorter than lead + stabilisation is bridged; headroom 25 %: 8 * 1.25 = 10
    plan = plan_replicas(
        _forecast([8.0, 1.0, 8.0]), 5.0, lead_time=300, stabilisation=3600, headroom=0.25,
        min_replicas=2, max_replicas=10,
    )  # fmt: skip
    assert list(plan.intervals["required"]) == [2, 2, 2]
    plan = plan_replicas(_forecast([8.0, 1.0, 80.0]), 5.0, max_replicas=10, stabilisation=0)
    assert list(plan.intervals["required"]) == [2, 1, 10]
    assert [s.replicas for s in plan.schedule] == [2, 1, 10]
    assert any("max_replicas=10" in n for n in plan.notes)
    with pytest.raises(InvalidInput, match="capacity must be a positive"):
        plan_replicas(_forecast([1.0]), 0.0)
    with pytest.raises(InvalidInput, match="bad replica bounds"):
        plan_replicas(_forecast([1.0]), 1.0, min_replicas=3, max_replicas=2)


def _history(blocks: list[tuple[float, float, int]]) -> pd.DataFrame:
    """Rows of 10 s: (req/s, p95 ms, how many intervals)."""
    rates = [r for r, _, n in blocks for _ in range(n)]
    p95 = [p for _, p, n in blocks for _ in range(n)]
    stamps = pd.date_range(T0, periods=len(rates), freq="10s")
    return pd.DataFrame(
        {"timestamp": stamps, "interval_s": 10.0, "requests": np.array(rates) * 10,
         "latency_p95_ms": p95, "errors_5xx": 0.0, "rejected": 0.0}
    )  # fmt: skip


def test_capacity_is_the_highest_sustained_rate_within_the_slo() -> None:
    history = _history([(10, 50, 6), (20, 80, 6), (30, 90, 3), (25, 70, 2), (40, 150, 6)])
    cap = capacity_from_history(history, slo_ms=100, sustain=6)
    # 30 req/s held only 3 intervals (then 25): the longest good runs at 20 and above hold 20
    assert cap.rps == pytest.approx(20.0)
    assert cap.source == "history" and not cap.lower_bound
    assert "held for 6 intervals" in cap.detail
    # the same rows with a 5xx in the 20 req/s block: only 10 req/s was held cleanly
    broken = history.copy()
    broken.loc[11, "errors_5xx"] = 1  # in every 6-interval window at 20 req/s or more
    assert capacity_from_history(broken, slo_ms=100).rps == pytest.approx(10.0)
    # never over the SLO: a lower bound, said in the plan
    easy = capacity_from_history(_history([(10, 50, 6), (12, 60, 6)]), slo_ms=100)
    assert easy.rps == pytest.approx(12.0) and easy.lower_bound
    plan = plan_replicas(_forecast([25.0]), easy)
    assert plan.schedule[0].replicas == 3
    assert any("lower bound" in n for n in plan.notes)
    with pytest.raises(InvalidInput, match="gives no capacity; pass --capacity"):
        capacity_from_history(_history([(40, 150, 12)]), slo_ms=100)


def test_capacity_counts_runs_of_one_replica_only() -> None:
    # two replicas interleaved: a (30 req/s within the SLO for 3 intervals, then over it) and
    # b (30 req/s within it for 6); merged in time order, a's short run and b's would look
    # like one long run of 30 req/s
    a = _history([(30, 80, 3), (30, 150, 3)]).assign(replica="a")
    b = _history([(12, 60, 6)]).assign(replica="b")
    b["timestamp"] += pd.Timedelta("5s")
    both = pd.concat([a, b]).sort_values("timestamp", kind="stable").reset_index(drop=True)
    cap = capacity_from_history(both, slo_ms=100, sustain=3)
    assert cap.rps == pytest.approx(30.0)  # replica a held 30 req/s for its 3 intervals
    cap6 = capacity_from_history(both, slo_ms=100, sustain=6)
    assert cap6.rps == pytest.approx(12.0)  # only b held a run of 6, at 12 req/s
