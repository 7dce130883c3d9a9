"""AIOps: the platform watching its own operations.

``modelloop serve`` records an operational history per model (:class:`OpsRecorder`, read back
with :func:`read_ops_history`, or from a Prometheus that scrapes the server with
:func:`read_prometheus_history`); :func:`detect_anomalies` finds spikes, level shifts, variance
changes and error bursts in a series against a seasonal, robust expectation;
:func:`scan_ops_history` runs it over a model's history, and :class:`OpsAnomalyRule` turns what
is still going on into alerts of ``modelloop monitor run``. :func:`forecast_demand` forecasts a
request rate (from :func:`demand_from_history`) with the model a rolling-origin backtest chooses;
:func:`plan_replicas` turns its upper quantile and a replica's capacity at the latency SLO
(:func:`capacity_from_history`) into a replica schedule ahead of time;
:func:`simulate_autoscaling` replays a demand series against that plan and against a reactive,
HPA-like policy. :func:`injected_series` and :func:`flights_demand` are the series that ship
with the project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelloop._lazy import lazy_exports

if TYPE_CHECKING:
    from modelloop.aiops._anomaly import Anomaly, detect_anomalies
    from modelloop.aiops._data import InjectedSeries, Injection, flights_demand, injected_series
    from modelloop.aiops._forecast import DemandForecast, demand_from_history, forecast_demand
    from modelloop.aiops._history import (
        OPS_COLUMNS,
        OpsRecorder,
        read_ops_history,
        write_ops_history,
    )
    from modelloop.aiops._plan import (
        Capacity,
        PlanStep,
        ScalingPlan,
        capacity_from_history,
        plan_replicas,
    )
    from modelloop.aiops._prometheus import read_prometheus_history
    from modelloop.aiops._scan import OpsAnomalyRule, OpsScan, scan_ops_history
    from modelloop.aiops._simulate import (
        PredictivePolicy,
        ReactivePolicy,
        SimulationResult,
        simulate_autoscaling,
    )

# Imported on first use: ``modelloop serve`` needs only the recorder, not the statistics.
_WHERE = {
    "Anomaly": "modelloop.aiops._anomaly",
    "detect_anomalies": "modelloop.aiops._anomaly",
    "InjectedSeries": "modelloop.aiops._data",
    "Injection": "modelloop.aiops._data",
    "flights_demand": "modelloop.aiops._data",
    "injected_series": "modelloop.aiops._data",
    "DemandForecast": "modelloop.aiops._forecast",
    "demand_from_history": "modelloop.aiops._forecast",
    "forecast_demand": "modelloop.aiops._forecast",
    "OPS_COLUMNS": "modelloop.aiops._history",
    "OpsRecorder": "modelloop.aiops._history",
    "read_ops_history": "modelloop.aiops._history",
    "write_ops_history": "modelloop.aiops._history",
    "Capacity": "modelloop.aiops._plan",
    "PlanStep": "modelloop.aiops._plan",
    "ScalingPlan": "modelloop.aiops._plan",
    "capacity_from_history": "modelloop.aiops._plan",
    "plan_replicas": "modelloop.aiops._plan",
    "read_prometheus_history": "modelloop.aiops._prometheus",
    "OpsAnomalyRule": "modelloop.aiops._scan",
    "OpsScan": "modelloop.aiops._scan",
    "scan_ops_history": "modelloop.aiops._scan",
    "PredictivePolicy": "modelloop.aiops._simulate",
    "ReactivePolicy": "modelloop.aiops._simulate",
    "SimulationResult": "modelloop.aiops._simulate",
    "simulate_autoscaling": "modelloop.aiops._simulate",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())


__all__ = [
    "OPS_COLUMNS",
    "Anomaly",
    "Capacity",
    "DemandForecast",
    "InjectedSeries",
    "Injection",
    "OpsAnomalyRule",
    "OpsRecorder",
    "OpsScan",
    "PlanStep",
    "PredictivePolicy",
    "ReactivePolicy",
    "ScalingPlan",
    "SimulationResult",
    "capacity_from_history",
    "demand_from_history",
    "detect_anomalies",
    "flights_demand",
    "forecast_demand",
    "injected_series",
    "plan_replicas",
    "read_ops_history",
    "read_prometheus_history",
    "scan_ops_history",
    "simulate_autoscaling",
    "write_ops_history",
]
