"""AIOps: the platform watching its own operations.

``modelloop serve`` records an operational history per model (:class:`OpsRecorder`, read back
with :func:`read_ops_history`, or from a Prometheus that scrapes the server with
:func:`read_prometheus_history`); :func:`detect_anomalies` finds spikes, level shifts, variance
changes and error bursts in a series against a seasonal, robust expectation;
:func:`scan_ops_history` runs it over a model's history, and :class:`OpsAnomalyRule` turns what
is still going on into alerts of ``modelloop monitor run``. :func:`injected_series` and
:func:`flights_demand` are the series that ship with the project.
"""

from modelloop.aiops._anomaly import Anomaly, detect_anomalies
from modelloop.aiops._data import InjectedSeries, Injection, flights_demand, injected_series
from modelloop.aiops._history import (
    OPS_COLUMNS,
    OpsRecorder,
    read_ops_history,
    write_ops_history,
)
from modelloop.aiops._prometheus import read_prometheus_history
from modelloop.aiops._scan import OpsAnomalyRule, OpsScan, scan_ops_history

__all__ = [
    "OPS_COLUMNS",
    "Anomaly",
    "InjectedSeries",
    "Injection",
    "OpsAnomalyRule",
    "OpsRecorder",
    "OpsScan",
    "detect_anomalies",
    "flights_demand",
    "injected_series",
    "read_ops_history",
    "read_prometheus_history",
    "scan_ops_history",
    "write_ops_history",
]
