"""Replay a demand series against an autoscaling policy: minutes in which demand exceeded the
ready capacity (SLO-violating minutes) and the replica-hours paid for.

The replay runs on a grid of ``resolution_s`` (default one minute). Demand is held constant
within each step of the series (a rate per hour stays that rate for the hour). A replica asked
for at ``t`` is paid for from ``t`` and ready from ``t + startup``; one let go stops at once.
So the ready replicas at ``t`` are the fewest asked for at any time in ``[t - startup, t]``.
A minute violates the SLO when demand > ready replicas * capacity (the queue grows, latency
leaves the SLO). Replica-hours count every replica asked for, starting or ready.

Policies:

* :class:`PredictivePolicy` — the plan of :func:`~modelloop.aiops.plan_replicas`, made
  rolling: before each step, ``lead_time`` ahead of it, a forecast from the data known then
  (steps that have ended) gives the step's upper quantile, hence its replicas; a step's
  replicas are kept ``stabilisation`` after it. The forecast is the seasonal naive of the
  series' step (weekly by default: the value a week before) with a conformal band: the
  ``quantile`` of its signed errors over the ``window_s`` before (the same construction as
  :func:`~modelloop.aiops.forecast_demand`, updated every step at negligible cost). On the
  flights demand the weekly naive is the model the backtest chooses (see benchmarks/aiops.py),
  so the replay uses it for the whole year rather than refitting a statsforecast model per
  step. By default the plan has a *reactive floor* (``reactive_floor``: the controller below
  at 90 % target utilisation), as deployed when the plan and the utilisation feed one
  autoscaler that takes the larger: the plan scales ahead of the demand it expects, the floor
  catches what it did not expect (a holiday, a schedule change) within a metric delay and a
  start-up instead of an hour. ``reactive_floor=None`` replays the plan alone.
* :class:`ReactivePolicy` — an HPA-like controller: every ``sync_s`` it reads the utilisation
  ``metric_delay_s`` old (demand / ready capacity, at most 1: a saturated replica cannot report
  more than full), wants ``ceil(ready * utilisation / target)`` replicas (no change within
  ``tolerance`` of the target), scales up at once and down only to the highest count wanted
  in the last ``stabilisation_s``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["PredictivePolicy", "ReactivePolicy", "SimulationResult", "simulate_autoscaling"]


@dataclass(frozen=True)
class PredictivePolicy:
    """The rolling predictive plan (see the module)."""

    quantile: float = 0.95
    lead_time_s: float = 120.0
    stabilisation_s: float = 600.0
    headroom: float = 0.0
    season: str = "weekly"  # or daily
    window_s: float = 28 * 86_400.0
    min_replicas: int = 1
    max_replicas: int | None = None
    #: the reactive floor under the plan (as deployed: the plan feeds the same HPA that also
    #: watches utilisation, which takes the larger of the two); None for the plan alone
    reactive_floor: ReactivePolicy | None = field(
        default_factory=lambda: ReactivePolicy(target_utilisation=0.9)
    )


@dataclass(frozen=True)
class ReactivePolicy:
    """An HPA-like reactive controller (see the module); Kubernetes' defaults where it has
    them (15 s sync, 10 % tolerance, 5 min scale-down stabilisation)."""

    target_utilisation: float = 0.7
    metric_delay_s: float = 60.0
    sync_s: float = 15.0
    tolerance: float = 0.1
    stabilisation_s: float = 300.0
    min_replicas: int = 1
    max_replicas: int | None = None


@dataclass(frozen=True)
class SimulationResult:
    """What a replay cost and how often it failed the SLO."""

    policy: str
    violation_minutes: float
    replica_hours: float
    demand_hours: float  # replica-hours a perfect oracle would need (demand / capacity)
    minutes: float  # replayed
    peak_replicas: int
    frame: pd.DataFrame  # per grid point: demand, wanted, ready, violating

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "violation_minutes": round(self.violation_minutes, 2),
            "replica_hours": round(self.replica_hours, 2),
            "demand_hours": round(self.demand_hours, 2),
            "minutes": self.minutes,
            "peak_replicas": self.peak_replicas,
        }


def _ready(wanted: np.ndarray, startup_points: int) -> np.ndarray:
    """The fewest replicas wanted in each trailing window of ``startup_points + 1`` points."""
    import numpy as np
    import pandas as pd

    if startup_points <= 0:
        return wanted.copy()
    return (
        pd.Series(wanted)
        .rolling(startup_points + 1, min_periods=1)
        .min()
        .to_numpy()
        .astype(np.int64)
    )


def _predictive_required(
    y: np.ndarray, step_s: float, policy: PredictivePolicy, capacity: float, first: int
) -> np.ndarray:
    """Required replicas per step from ``first`` on, each from data known ``lead_time``
    before the step starts."""
    import numpy as np

    daily = round(86_400 / step_s)
    season = 7 * daily if policy.season == "weekly" else daily
    if policy.season not in ("weekly", "daily"):
        raise InvalidInput(f"season must be weekly or daily, got {policy.season!r}")
    window = max(int(policy.window_s / step_s), 8)
    errors = np.full(len(y), np.nan)
    errors[season:] = y[season:] - y[:-season]
    required = np.zeros(len(y), dtype=np.int64)
    lag = math.ceil(policy.lead_time_s / step_s - 1e-9)  # steps not yet ended when deciding
    for j in range(first, len(y)):
        known = j - lag  # steps [0, known) have ended
        if j - season >= known:  # the naive needs a known value a season back
            raise InvalidInput("lead time longer than the season: nothing known to forecast")
        past = errors[max(season, known - window) : known]
        past = past[np.isfinite(past)]
        if len(past) < 8:
            raise InvalidInput(f"too few known errors before step {j} for the band")
        ordered = np.sort(past)
        rank = min(max(math.ceil((len(ordered) + 1) * policy.quantile), 1), len(ordered))
        upper = max(y[j - season] + max(float(ordered[rank - 1]), 0.0), 0.0)
        need = math.ceil(upper * (1 + policy.headroom) / capacity - 1e-9)
        need = max(need, policy.min_replicas)
        if policy.max_replicas is not None:
            need = min(need, policy.max_replicas)
        required[j] = need
    return required


def simulate_autoscaling(
    demand: pd.Series,
    policy: PredictivePolicy | ReactivePolicy,
    *,
    capacity_rps: float,
    startup_s: float = 120.0,
    resolution_s: float = 60.0,
    warmup_s: float = 14 * 86_400.0,
) -> SimulationResult:
    """Replay ``demand`` (requests/s on a regular index) against ``policy`` with replicas of
    ``capacity_rps`` that take ``startup_s`` to become ready; the first ``warmup_s`` are only
    history (the predictive policy's forecasts need it) and are not counted, for either policy.
    """
    import numpy as np
    import pandas as pd

    from modelloop.aiops._forecast import _check_series

    if not (capacity_rps > 0 and math.isfinite(capacity_rps)):
        raise InvalidInput(f"capacity must be a positive requests/s, got {capacity_rps}")
    if startup_s < 0 or resolution_s <= 0:
        raise InvalidInput("start-up time must be >= 0 and the resolution > 0")
    series, step_s = _check_series(demand)
    per_step = step_s / resolution_s
    if abs(per_step - round(per_step)) > 1e-9 or round(per_step) < 1:
        raise InvalidInput(
            f"the series' step ({step_s:g} s) must be a whole number of resolution steps "
            f"({resolution_s:g} s)"
        )
    k = round(per_step)
    y = series.to_numpy()
    first = math.ceil(warmup_s / step_s - 1e-9)
    if first >= len(y):
        raise InvalidInput(
            f"the demand series ({len(y)} steps of {step_s:g} s) is not longer than the "
            f"warm-up ({warmup_s:g} s)"
        )
    fine = np.repeat(y[first:], k)  # demand per grid point, held within each step
    n = len(fine)
    startup_points = math.ceil(startup_s / resolution_s - 1e-9)
    if isinstance(policy, PredictivePolicy):
        if not 0.5 < policy.quantile < 1:
            raise InvalidInput(f"quantile must be between 0.5 and 1, got {policy.quantile}")
        required = _predictive_required(y, step_s, policy, capacity_rps, first)[first:]
        wanted = np.full(n, policy.min_replicas, dtype=np.int64)
        lead = math.ceil(policy.lead_time_s / resolution_s - 1e-9)
        stab = math.ceil(policy.stabilisation_s / resolution_s - 1e-9)
        for j, r in enumerate(required):
            a = max(j * k - lead, 0)
            b = min((j + 1) * k + stab, n)
            np.maximum(wanted[a:b], r, out=wanted[a:b])
        pre = max(int(required[0]), policy.min_replicas)
        if policy.reactive_floor is not None:
            wanted, ready = _reactive(
                fine, policy.reactive_floor, capacity_rps, resolution_s, startup_points,
                plan=wanted, start=pre,
            )  # fmt: skip
        else:
            ready = _ready(wanted, startup_points)
            # the first step's replicas were running (and ready) when the replay starts
            ready[:startup_points] = np.minimum(ready[:startup_points], pre)
        name = "predictive"
    elif isinstance(policy, ReactivePolicy):
        wanted, ready = _reactive(fine, policy, capacity_rps, resolution_s, startup_points)
        name = "reactive"
    else:
        raise InvalidInput(f"unknown policy {policy!r}")
    violating = fine > ready * capacity_rps + 1e-9
    minutes = n * resolution_s / 60.0
    index = pd.date_range(series.index[first], periods=n, freq=pd.Timedelta(seconds=resolution_s))
    frame = pd.DataFrame(
        {"demand": fine, "wanted": wanted, "ready": ready, "violating": violating}, index=index
    )
    return SimulationResult(
        policy=name,
        violation_minutes=float(violating.sum() * resolution_s / 60.0),
        replica_hours=float(wanted.sum() * resolution_s / 3600.0),
        demand_hours=float(fine.sum() / capacity_rps * resolution_s / 3600.0),
        minutes=minutes,
        peak_replicas=int(wanted.max()),
        frame=frame,
    )


def _reactive(
    fine: np.ndarray,
    policy: ReactivePolicy,
    capacity: float,
    resolution_s: float,
    startup_points: int,
    *,
    plan: np.ndarray | None = None,
    start: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    if not 0 < policy.target_utilisation <= 1:
        raise InvalidInput(f"target utilisation must be in (0, 1], got {policy.target_utilisation}")
    n = len(fine)
    sync = max(1, round(policy.sync_s / resolution_s))
    delay = max(1, math.ceil(policy.metric_delay_s / resolution_s - 1e-9))
    stab = math.ceil(policy.stabilisation_s / resolution_s - 1e-9)
    # before the replay the controller had settled at its target for the first demand
    if start is None:
        start = max(policy.min_replicas, math.ceil(fine[0] / capacity / policy.target_utilisation))
    wanted = np.empty(n, dtype=np.int64)
    ready = np.empty(n, dtype=np.int64)
    utilisation = np.empty(n)
    recs: list[int] = []  # recommendations, one per sync, for the scale-down stabilisation
    current = start
    for t in range(n):
        if t % sync == 0:
            seen = utilisation[t - delay] if t >= delay else min(fine[0] / (start * capacity), 1)
            base = int(ready[t - 1]) if t else start
            ratio = seen / policy.target_utilisation
            rec = current if abs(ratio - 1) <= policy.tolerance else math.ceil(base * ratio)
            rec = max(rec, policy.min_replicas)
            if plan is not None:  # the plan's replicas are the other metric of the same HPA
                rec = max(rec, int(plan[t]))
            if policy.max_replicas is not None:
                rec = min(rec, policy.max_replicas)
            recs.append(rec)
            recent = recs[-max(1, math.ceil(stab / sync)) :]
            current = rec if rec >= current else min(current, max(recent))
        if plan is not None and plan[t] > current:  # the plan's scale-ups are scheduled
            current = int(plan[t])
        wanted[t] = current
        lo = t - startup_points
        now = int(wanted[max(lo, 0) : t + 1].min())
        ready[t] = min(now, start) if lo < 0 else now
        utilisation[t] = min(fine[t] / (ready[t] * capacity), 1.0) if ready[t] else 1.0
    return wanted, ready


def result_dict(result: SimulationResult) -> dict[str, Any]:
    """A JSON-ready summary of ``result``."""
    return result.to_dict()


def policy_dict(policy: PredictivePolicy | ReactivePolicy) -> dict[str, Any]:
    """The policy's parameters."""
    return {"kind": type(policy).__name__, **asdict(policy)}
