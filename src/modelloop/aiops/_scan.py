"""Scanning a model's operational history for anomalies, and the alert rule built on it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from modelloop.aiops._anomaly import MIN_POINTS, Anomaly, detect_anomalies
from modelloop.exceptions import InvalidInput, NotFound
from modelloop.monitoring._alerts import AlertRule, Condition, MonitorResult

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["SCANNED_SERIES", "OpsAnomalyRule", "OpsScan", "scan_ops_history"]

#: The history columns scanned and how: latencies and errors only upwards; requests both ways.
SCANNED_SERIES: dict[str, dict[str, Any]] = {
    "requests": {"transform": "log1p"},
    "latency_p50_ms": {"transform": "log", "direction": "up"},
    "latency_p95_ms": {"transform": "log", "direction": "up"},
    "errors_5xx": {"transform": "counts", "direction": "up", "burst": True},
    "errors_4xx": {"transform": "counts", "direction": "up", "burst": True},
    "rejected": {"transform": "counts", "direction": "up", "burst": True},
}


@dataclass(frozen=True)
class OpsScan:
    """The anomalies found in one model's history, and what was looked at."""

    model: str
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    rows: int
    step_s: float
    anomalies: tuple[Anomaly, ...]
    notes: tuple[str, ...] = ()  # stretches or series left out, and why

    def current(self) -> tuple[Anomaly, ...]:
        """Anomalies still going on at the end of the history (their last point is among the
        last two intervals)."""
        if self.end is None:
            return ()
        import pandas as pd

        edge = self.end - pd.Timedelta(seconds=2 * self.step_s)
        return tuple(a for a in self.anomalies if a.end >= edge)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "start": self.start.isoformat() if self.start is not None else None,
            "end": self.end.isoformat() if self.end is not None else None,
            "rows": self.rows,
            "step_s": self.step_s,
            "anomalies": [a.to_dict() for a in self.anomalies],
            "current": [a.to_dict() for a in self.current()],
            "notes": list(self.notes),
        }


def _stretches(seconds: np.ndarray, step: float) -> list[tuple[int, int]]:
    """(first, end) of each run of rows without a gap, from the seconds between rows."""
    import numpy as np

    cuts = [0, *[int(i) + 1 for i in np.flatnonzero(seconds > 1.5 * step)], len(seconds) + 1]
    return [(a, b) for a, b in pairwise(cuts) if b > a]


def scan_ops_history(
    model: str,
    since: str | datetime | float | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    history: pd.DataFrame | None = None,
) -> OpsScan:
    """Detect anomalies in the history of ``model`` (read from ``home``, or given as
    ``history``): every series of :data:`SCANNED_SERIES`, in each stretch without gaps (a server
    restart leaves one) of at least :data:`~modelloop.aiops._anomaly.MIN_POINTS` intervals.
    Latencies of intervals without traffic carry the last observed value. Replicas sharing
    the log root are scanned as one service: their rows of one interval are combined first
    (:func:`~modelloop.aiops._history.combine_replicas`)."""
    import numpy as np

    from modelloop.aiops._history import combine_replicas, parse_since, read_ops_history

    if history is None:
        wanted = [*SCANNED_SERIES, "interval_s", "replica"]
        history = read_ops_history(model, since, home=home, columns=wanted)
    elif since is not None:
        history = history[history["timestamp"] >= parse_since(since)]
    replicas = (
        history["replica"].astype("object").fillna("").nunique()
        if "replica" in history.columns
        else 1
    )
    if replicas > 1:
        history = combine_replicas(history)
    if history.empty:
        raise NotFound(f"model {model!r} has no operational history in the span asked for")
    import pandas as pd

    from modelloop.aiops._anomaly import _TICKS_PER_S

    stamps = pd.DatetimeIndex(history["timestamp"])
    seconds = np.diff(stamps.asi8) / _TICKS_PER_S[stamps.unit]
    step = float(np.median(seconds)) if len(seconds) else 0.0
    stretches = _stretches(seconds, step) if step > 0 else [(0, len(stamps))]
    notes: list[str] = []
    if replicas > 1:
        notes.append(f"the rows of {replicas} replicas combined into one row per interval")
    anomalies: list[Anomaly] = []
    usable = 0
    columns = {
        c: history[c].to_numpy(dtype=float, na_value=np.nan)
        for c in SCANNED_SERIES
        if c in history.columns
    }
    for a, b in stretches:
        if b - a < MIN_POINTS:
            notes.append(
                f"{b - a} intervals from {stamps[a]} to {stamps[b - 1]} left out: fewer than "
                f"{MIN_POINTS} in a row"
            )
            continue
        usable += 1
        index = stamps[a:b]
        for column, data in columns.items():
            part = data[a:b]
            if np.isnan(part).all():
                continue  # not recorded in this history
            values = pd.Series(part, index=index, name=column)
            if column.startswith("latency"):
                values = values.ffill().bfill().clip(lower=1e-3)
            anomalies.extend(detect_anomalies(values, name=column, **SCANNED_SERIES[column]))
    if not usable:
        raise InvalidInput(
            f"the history of {model!r} has no {MIN_POINTS} consecutive intervals to analyse "
            f"({len(history)} rows in {len(stretches)} stretch(es)); let the server run longer "
            "or widen --since"
        )
    anomalies.sort(key=lambda x: (x.start, x.series))
    return OpsScan(
        model=model,
        start=stamps[0],
        end=stamps[-1],
        rows=len(history),
        step_s=step,
        anomalies=tuple(anomalies),
        notes=tuple(notes),
    )


class OpsAnomalyRule(AlertRule):
    """Fires while the model's operational history has an anomaly still going on at its end
    (see :meth:`OpsScan.current`); resolves when the latest intervals are back in their bands.
    A model without history (or too little of it) keeps its state. ``since``: how much history
    the expectation is learnt from (None: all of it). ``prometheus``: read the history from
    this Prometheus URL (rows of ``step_s``) instead of the home's; when it cannot be reached
    the run fails with ServiceUnavailable (a scheduled ``monitor run`` skips that run)."""

    def __init__(
        self,
        since: str | None = "7d",
        home: str | os.PathLike[str] | None = None,
        name: str = "ops_anomaly",
        prometheus: str | None = None,
        step_s: float = 10.0,
    ) -> None:
        from modelloop.aiops._history import parse_since

        parse_since(since)  # a bad value fails here, before any run
        if prometheus is not None and not prometheus.startswith(("http://", "https://")):
            raise InvalidInput(f"the Prometheus URL must be http(s), got {prometheus!r}")
        self.since = since
        self.home = home
        self.name = name
        self.prometheus = prometheus
        self.step_s = step_s

    def evaluate(self, result: MonitorResult) -> Condition | None:
        try:
            if self.prometheus:
                from modelloop.aiops._prometheus import read_prometheus_history

                history = read_prometheus_history(
                    result.model, self.prometheus, self.since, step_s=self.step_s
                )
                scan = scan_ops_history(result.model, history=history)
            else:
                scan = scan_ops_history(result.model, self.since, home=self.home)
        except (NotFound, InvalidInput):
            return None
        now = scan.current()
        if not now:
            return Condition(False, 0.0, "operational series within their expected bands")
        return Condition(True, float(len(now)), "; ".join(a.describe() for a in now))
