"""A predictive autoscaling plan: how many replicas, from when, so the forecast demand is served
within the latency SLO — and the capacity of one replica it rests on.

Arithmetic, per forecast step ``[start, start + step)``:

* ``required = ceil(upper * (1 + headroom) / capacity)``, clamped to ``[min_replicas,
  max_replicas]``: ``upper`` is the forecast's upper quantile, ``capacity`` the requests/s one
  replica serves within the SLO.
* *Lead time* (a replica's start-up): a step's replicas are asked for ``lead_time`` before it
  starts, so they are ready when it begins.
* *Stabilisation*: after a step, its replicas are kept ``stabilisation`` longer, so a dip
  shorter than that does not scale down only to scale up again.

So the replicas wanted at time ``t`` are the largest ``required`` of the steps whose window
``[start - lead_time, end + stabilisation)`` holds ``t``; the schedule lists the times that
number changes.

Capacity from the history (:func:`capacity_from_history`): the history holds one row per
interval of one server process (a replica). A *sustained* load is a run of ``sustain``
consecutive intervals with traffic; its rate is the lowest requests/s among them. A run counts
when every interval in it kept its p95 latency within the SLO, with no 5xx errors and no
rejected requests. The capacity is the highest rate among the runs that count. When no interval
ever broke the SLO, the replica was never pushed to its limit: the capacity is then only a
lower bound, and the plan says so (conservative: more replicas, never fewer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.aiops._forecast import DemandForecast

__all__ = ["Capacity", "PlanStep", "ScalingPlan", "capacity_from_history", "plan_replicas"]


@dataclass(frozen=True)
class Capacity:
    """Requests/s one replica serves within the latency SLO, and where that number comes from."""

    rps: float
    source: str  # history, given, measured
    slo_ms: float
    detail: str
    lower_bound: bool = False  # the history never reached the SLO: the true capacity is higher

    def to_dict(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 4),
            "source": self.source,
            "slo_ms": self.slo_ms,
            "detail": self.detail,
            "lower_bound": self.lower_bound,
        }


def capacity_from_history(
    frame: pd.DataFrame, slo_ms: float = 100.0, *, sustain: int = 6, quantile_column: str = ""
) -> Capacity:
    """The highest sustained requests/s of one replica whose p95 latency stayed within
    ``slo_ms`` (see the module's rule), from an ops history frame. With several replicas in the
    history (its ``replica`` column), a sustained run is one replica's consecutive rows."""
    import numpy as np
    import pandas as pd

    column = quantile_column or "latency_p95_ms"
    if slo_ms <= 0 or not math.isfinite(slo_ms):
        raise InvalidInput(f"the latency SLO must be a positive number of ms, got {slo_ms}")
    if sustain < 1:
        raise InvalidInput(f"sustain must be at least 1 interval, got {sustain}")
    need = {"requests", "interval_s", column}
    missing = sorted(need - set(frame.columns))
    if missing:
        raise InvalidInput(f"the ops history lacks the columns {missing}")
    keys = np.zeros(len(frame), dtype=object)
    if "replica" in frame.columns:
        named = frame["replica"].astype("object").where(frame["replica"].notna(), "")
        if named.nunique() > 1:  # each replica's rows in a row of their own, in time order
            order = np.lexsort(
                (pd.to_datetime(frame["timestamp"], utc=True).to_numpy(), named.to_numpy())
            )
            frame, keys = frame.iloc[order].reset_index(drop=True), named.to_numpy()[order]
    num = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float) for c in need}
    requests, interval, latency = num["requests"], num["interval_s"], num[column]
    rate = np.where(interval > 0, requests / np.where(interval > 0, interval, 1.0), np.nan)
    extra = np.zeros(len(frame))
    for c in ("errors_5xx", "rejected"):
        if c in frame.columns:
            extra += np.nan_to_num(pd.to_numeric(frame[c], errors="coerce").to_numpy(float))
    busy = (requests > 0) & np.isfinite(rate)
    good = busy & np.isfinite(latency) & (latency <= slo_ms) & (extra == 0)
    broke = busy & ((np.isfinite(latency) & (latency > slo_ms)) | (extra > 0))
    best, at = 0.0, -1
    for i in range(len(frame) - sustain + 1):
        window = slice(i, i + sustain)
        if keys[i] == keys[i + sustain - 1] and good[window].all():
            low = float(np.min(rate[window]))
            if low > best:
                best, at = low, i
    if at < 0:
        raise InvalidInput(
            f"no {sustain} consecutive intervals with traffic kept p95 within {slo_ms:g} ms "
            "without 5xx or rejections: the history gives no capacity; pass --capacity RPS"
        )
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    lower = not broke.any()
    detail = (
        f"{best:.4g} req/s held for {sustain} intervals from {stamps.iloc[at].isoformat()} "
        f"with p95 <= {slo_ms:g} ms, no 5xx, no rejections"
    )
    if lower:
        detail += "; the SLO was never broken in the history, so this is a lower bound"
    return Capacity(best, "history", float(slo_ms), detail, lower_bound=lower)


@dataclass(frozen=True)
class PlanStep:
    """From ``start`` on, run ``replicas`` replicas."""

    start: datetime  # tz-aware UTC
    replicas: int

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "replicas": self.replicas}


@dataclass(frozen=True)
class ScalingPlan:
    """Replicas ahead of time for a demand forecast; every number it rests on is kept.

    ``schedule``: the steps at which the replica count changes (the first at the plan's start).
    ``intervals``: per forecast step, its start, forecast upper quantile and required replicas.
    """

    schedule: tuple[PlanStep, ...]
    intervals: pd.DataFrame
    capacity: Capacity
    quantile: float
    headroom: float
    lead_time_s: float
    stabilisation_s: float
    min_replicas: int
    max_replicas: int | None
    rss_bytes_per_replica: float | None
    forecast: DemandForecast
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def peak_replicas(self) -> int:
        return max(s.replicas for s in self.schedule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": [s.to_dict() for s in self.schedule],
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "peak_replicas": self.peak_replicas,
            "capacity": self.capacity.to_dict(),
            "quantile": self.quantile,
            "headroom": self.headroom,
            "lead_time_s": self.lead_time_s,
            "stabilisation_s": self.stabilisation_s,
            "rss_bytes_per_replica": self.rss_bytes_per_replica,
            "rule": (
                "required = ceil(upper * (1 + headroom) / capacity), clamped to "
                "[min_replicas, max_replicas]; each step's replicas are asked for lead_time "
                "before it starts and kept stabilisation after it ends"
            ),
            "intervals": [
                {
                    "start": ts.isoformat(),
                    "upper": round(float(r.upper), 4),
                    "mean": round(float(r["mean"]), 4),
                    "required": int(r.required),
                }
                for ts, r in self.intervals.iterrows()
            ],
            "forecast": self.forecast.to_dict(),
            "notes": list(self.notes),
        }

    def chart_html(self, history: pd.Series | None = None) -> str:
        """A self-contained HTML page (plotly.js embedded from the installed package): recent
        demand, the forecast and its band, and the capacity of the planned replicas."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        f = self.forecast.frame
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        if history is not None and len(history):
            fig.add_trace(go.Scatter(x=history.index, y=history.values, name="demand (req/s)"))
        fig.add_trace(
            go.Scatter(x=f.index, y=f["upper"], name=f"upper q{self.quantile:g}", line_width=0)
        )
        fig.add_trace(
            go.Scatter(
                x=f.index, y=f["lower"], name="lower", fill="tonexty", line_width=0,
                fillcolor="rgba(99,110,250,0.2)",
            )
        )  # fmt: skip
        fig.add_trace(go.Scatter(x=f.index, y=f["mean"], name=f"forecast ({self.forecast.model})"))
        xs = [s.start for s in self.schedule] + [f.index[-1] + (f.index[1] - f.index[0])
                                                 if len(f) > 1 else f.index[-1]]  # fmt: skip
        ys = [s.replicas for s in self.schedule] + [self.schedule[-1].replicas]
        fig.add_trace(
            go.Scatter(
                x=xs, y=[r * self.capacity.rps for r in ys], name="planned capacity (req/s)",
                line_shape="hv", line_dash="dash",
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=xs, y=ys, name="replicas", line_shape="hv", opacity=0.5),
            secondary_y=True,
        )
        fig.update_layout(
            title=(
                f"Autoscaling plan: capacity {self.capacity.rps:.4g} req/s per replica "
                f"({self.capacity.source}), p95 SLO {self.capacity.slo_ms:g} ms"
            ),
            yaxis_title="requests/s",
        )
        fig.update_yaxes(title_text="replicas", secondary_y=True)
        return str(fig.to_html(full_html=True, include_plotlyjs=True))


def _wanted(
    starts_s: Any, step_s: float, required: Any, t_s: float, lead_s: float, stab_s: float
) -> int:
    best = 0
    for s, r in zip(starts_s, required, strict=True):
        if s - lead_s <= t_s < s + step_s + stab_s:
            best = max(best, int(r))
    return best


def plan_replicas(
    forecast: DemandForecast,
    capacity: Capacity | float,
    *,
    lead_time: float = 120.0,
    stabilisation: float = 600.0,
    headroom: float = 0.0,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    rss_bytes_per_replica: float | None = None,
    start: datetime | None = None,
) -> ScalingPlan:
    """The replicas to run ahead of ``forecast`` (see the module's arithmetic): ``capacity``
    in requests/s per replica (a number is taken as given), ``lead_time`` and
    ``stabilisation`` in seconds. The schedule starts at ``start`` (default: ``lead_time``
    before the first forecast step, the earliest moment the plan acts)."""
    import numpy as np
    import pandas as pd

    cap = (
        capacity
        if isinstance(capacity, Capacity)
        else Capacity(float(capacity), "given", math.nan, "given by the caller")
    )
    if not (math.isfinite(cap.rps) and cap.rps > 0):
        raise InvalidInput(f"replica capacity must be a positive requests/s, got {cap.rps}")
    if min_replicas < 0 or (max_replicas is not None and max_replicas < max(min_replicas, 1)):
        raise InvalidInput(
            f"bad replica bounds: min {min_replicas}, max {max_replicas} (need 0 <= min <= max)"
        )
    if lead_time < 0 or stabilisation < 0 or headroom < 0:
        raise InvalidInput("lead time, stabilisation and headroom must not be negative")
    f = forecast.frame
    if f.empty:
        raise InvalidInput("the forecast has no steps: nothing to plan")
    upper = f["upper"].to_numpy(dtype=float)
    required = np.ceil(upper * (1 + headroom) / cap.rps - 1e-9).astype(int)
    required = np.maximum(required, min_replicas)
    notes = []
    if max_replicas is not None:
        capped = required > max_replicas
        if capped.any():
            notes.append(
                f"{int(capped.sum())} steps need more than max_replicas={max_replicas}: capped, "
                "the SLO will not hold there"
            )
        required = np.minimum(required, max_replicas)
    if cap.lower_bound:
        notes.append("capacity is a lower bound (the history never reached the SLO)")
    step_s = forecast.step_s
    starts = [ts.to_pydatetime() for ts in f.index]
    base = starts[0].timestamp()
    starts_s = [s.timestamp() - base for s in starts]
    t0 = pd.Timestamp(start).tz_convert("UTC").timestamp() - base if start else -lead_time
    # the count only changes at a step's start - lead or end + stabilisation; the plan ends
    # with the forecast (what comes after it is not known, so nothing scales down past it)
    end = starts_s[-1] + step_s
    edges = sorted(
        {t0}
        | {s - lead_time for s in starts_s if s - lead_time >= t0}
        | {s + step_s + stabilisation for s in starts_s if s + step_s + stabilisation < end}
    )
    schedule: list[PlanStep] = []
    for t in edges:
        n = _wanted(starts_s, step_s, required, t, lead_time, stabilisation)
        n = max(n, min_replicas)
        if not schedule or schedule[-1].replicas != n:
            when = pd.Timestamp(base + t, unit="s", tz="UTC").to_pydatetime()
            schedule.append(PlanStep(when, n))
    intervals = pd.DataFrame(
        {"mean": f["mean"].to_numpy(), "upper": upper, "required": required}, index=f.index
    )
    return ScalingPlan(
        schedule=tuple(schedule),
        intervals=intervals,
        capacity=cap,
        quantile=forecast.quantile,
        headroom=headroom,
        lead_time_s=float(lead_time),
        stabilisation_s=float(stabilisation),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        rss_bytes_per_replica=rss_bytes_per_replica,
        forecast=forecast,
        notes=tuple(notes),
    )
