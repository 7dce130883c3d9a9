"""AIOps: the platform watching its own operations.

``modelloop serve`` records an operational history per model (:class:`OpsRecorder`, read back
with :func:`read_ops_history`); :func:`detect_anomalies` finds spikes, level shifts, variance
changes and error bursts in it against a seasonal, robust expectation, and
:class:`OpsAnomalyRule` turns them into alerts of ``modelloop monitor run``.
"""

from modelloop.aiops._history import OPS_COLUMNS, OpsRecorder, read_ops_history

__all__ = ["OPS_COLUMNS", "OpsRecorder", "read_ops_history"]
