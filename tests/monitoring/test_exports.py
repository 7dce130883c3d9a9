"""The public names of modelloop.monitoring are locked, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import modelloop.monitoring as monitoring

EXPECTED = {
    "reference_tags",
    "render_history_html",
    "PREDICTION_COLUMNS",
    "append_feedback",
    "append_predictions",
    "MonitorOutcome",
    "StoreAlertStates",
    "feedback_dir",
    "run_monitor",
    "VersionWindow",
    "describe_versions",
    "version_metrics",
    "REFERENCE_TAG",
    "TASK_TAG",
    "load_reference",
    "profile_with_predictions",
    "save_reference",
    "set_reference",
    "DEFAULT_BINS",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStateStore",
    "CalendarWindow",
    "CategoricalProfile",
    "CategoricalSummary",
    "ChiSquareDetector",
    "ColumnDrift",
    "ColumnQuality",
    "Condition",
    "DriftMonitor",
    "DriftResult",
    "DriftShareAbove",
    "FeatureDrifted",
    "InMemoryAlertStateStore",
    "JensenShannonDetector",
    "KSDetector",
    "KSEffectDetector",
    "CALIBRATION_TAG",
    "CalibratedColumn",
    "CalibratedDrift",
    "DriftCalibration",
    "calibrate",
    "calibrate_frame",
    "calibrate_model",
    "load_calibration",
    "save_calibration",
    "DatetimeProfile",
    "DatetimeSummary",
    "IdentifierProfile",
    "IdentifierSummary",
    "TVEffectDetector",
    "LastDuration",
    "LastRows",
    "LogNotifier",
    "MetricAbove",
    "MetricBelow",
    "MetricRow",
    "MonitorResult",
    "NumericProfile",
    "NumericSummary",
    "PSIDetector",
    "PerformanceReport",
    "PredictionLog",
    "PrometheusNotifier",
    "QualityBreach",
    "QualityReport",
    "ReferenceProfile",
    "SegmentGap",
    "TimeRange",
    "WassersteinDetector",
    "WebhookNotifier",
    "Window",
    "WindowAccumulator",
    "WindowSummary",
    "adjust_p_values",
    "check_quality",
    "detect_drift",
    "join_labels",
    "live_performance",
    "make_detector",
    "parse_window",
    "prediction_frame",
    "render_html",
    "report_json",
    "summarize",
}


def test_exported_names() -> None:
    assert sorted(monitoring.__all__) == sorted(EXPECTED)  # also catches a name listed twice
    for name in monitoring.__all__:
        assert getattr(monitoring, name) is not None
        assert name in ("DEFAULT_BINS", "Window") or getattr(monitoring, name).__doc__


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, json, modelloop.monitoring;"
        "print(json.dumps(sorted(m for m in ('scipy', 'duckdb', 'plotly', 'prometheus_client',"
        " 'sklearn', 'pyarrow', 'pandas') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
