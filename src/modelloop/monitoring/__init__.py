"""Monitoring: reference profiles, drift detection, data quality, windows, performance, alerts.

Typical run (the reference data is read once, when the profile is built)::

    profile = ReferenceProfile.from_frame(train_df, columns)        # store profile.to_dict()
    monitor = DriftMonitor().fit(profile)
    acc = monitor.accumulator()                                     # streaming, bounded memory
    for batch in PredictionLog.for_model(root, "flights").batches("day", columns):
        acc.update(batch)
    summary = acc.summary()
    drift = monitor.test(summary)                                   # DriftResult
    quality = check_quality(profile, summary)                       # QualityReport
    html = render_html(profile, summary, drift, quality=quality)
    events = AlertManager(rules).evaluate(MonitorResult("flights", drift, quality))

History-calibrated drift (opt-in): :func:`calibrate_model` learns each input's normal distance
from the reference on the model's own past windows (season-aligned when asked) and attaches it to
the version; :func:`run_monitor` then adds the calibrated verdict (``result.calibrated``).

For a registered model, :func:`run_monitor` does all of this over its prediction log, with the
outputs and live metrics of each served version judged against that version's own reference
(``outcome.result.versions``); :func:`version_metrics` reads them back from the latest stored run.

Every result is a frozen dataclass with JSON-safe ``to_dict()`` / ``from_dict()``. Heavy
libraries (scipy, pyarrow, duckdb, plotly, prometheus_client) are imported inside the functions
that need them.
"""

from __future__ import annotations

from modelloop.monitoring._alerts import (
    AlertEvent,
    AlertManager,
    AlertRule,
    AlertState,
    AlertStateStore,
    Condition,
    DriftShareAbove,
    FeatureDrifted,
    InMemoryAlertStateStore,
    MetricAbove,
    MetricBelow,
    MonitorResult,
    QualityBreach,
)
from modelloop.monitoring._calibrate_model import (
    CALIBRATION_TAG,
    calibrate_model,
    load_calibration,
    save_calibration,
)
from modelloop.monitoring._calibration import (
    CalibratedColumn,
    CalibratedDrift,
    DriftCalibration,
    calibrate,
    calibrate_frame,
)
from modelloop.monitoring._detectors import (
    ChiSquareDetector,
    JensenShannonDetector,
    KSDetector,
    KSEffectDetector,
    PSIDetector,
    TVEffectDetector,
    WassersteinDetector,
    make_detector,
)
from modelloop.monitoring._drift import (
    DriftMonitor,
    adjust_p_values,
    detect_drift,
    prediction_frame,
)
from modelloop.monitoring._history import render_history_html
from modelloop.monitoring._logfiles import (
    PREDICTION_COLUMNS,
    append_feedback,
    append_predictions,
)
from modelloop.monitoring._notifiers import LogNotifier, PrometheusNotifier, WebhookNotifier
from modelloop.monitoring._performance import (
    MetricRow,
    PerformanceReport,
    SegmentGap,
    join_labels,
    live_performance,
)
from modelloop.monitoring._profile import (
    DEFAULT_BINS,
    CategoricalProfile,
    DatetimeProfile,
    IdentifierProfile,
    NumericProfile,
    ReferenceProfile,
)
from modelloop.monitoring._quality import ColumnQuality, QualityReport, check_quality
from modelloop.monitoring._reference import (
    REFERENCE_TAG,
    TASK_TAG,
    load_reference,
    profile_with_predictions,
    reference_tags,
    save_reference,
    set_reference,
)
from modelloop.monitoring._report import render_html, report_json
from modelloop.monitoring._result import ColumnDrift, DriftResult
from modelloop.monitoring._service import (
    MonitorOutcome,
    StoreAlertStates,
    feedback_dir,
    run_monitor,
)
from modelloop.monitoring._summary import (
    CategoricalSummary,
    DatetimeSummary,
    IdentifierSummary,
    NumericSummary,
    WindowAccumulator,
    WindowSummary,
    summarize,
)
from modelloop.monitoring._versions import VersionWindow, describe_versions, version_metrics
from modelloop.monitoring._windows import (
    CalendarWindow,
    LastDuration,
    LastRows,
    PredictionLog,
    TimeRange,
    Window,
    parse_window,
)

__all__ = [
    "CALIBRATION_TAG",
    "DEFAULT_BINS",
    "PREDICTION_COLUMNS",
    "REFERENCE_TAG",
    "TASK_TAG",
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStateStore",
    "CalendarWindow",
    "CalibratedColumn",
    "CalibratedDrift",
    "CategoricalProfile",
    "CategoricalSummary",
    "ChiSquareDetector",
    "ColumnDrift",
    "ColumnQuality",
    "Condition",
    "DatetimeProfile",
    "DatetimeSummary",
    "DriftCalibration",
    "DriftMonitor",
    "DriftResult",
    "DriftShareAbove",
    "FeatureDrifted",
    "IdentifierProfile",
    "IdentifierSummary",
    "InMemoryAlertStateStore",
    "JensenShannonDetector",
    "KSDetector",
    "KSEffectDetector",
    "LastDuration",
    "LastRows",
    "LogNotifier",
    "MetricAbove",
    "MetricBelow",
    "MetricRow",
    "MonitorOutcome",
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
    "StoreAlertStates",
    "TVEffectDetector",
    "TimeRange",
    "VersionWindow",
    "WassersteinDetector",
    "WebhookNotifier",
    "Window",
    "WindowAccumulator",
    "WindowSummary",
    "adjust_p_values",
    "append_feedback",
    "append_predictions",
    "calibrate",
    "calibrate_frame",
    "calibrate_model",
    "check_quality",
    "describe_versions",
    "detect_drift",
    "feedback_dir",
    "join_labels",
    "live_performance",
    "load_calibration",
    "load_reference",
    "make_detector",
    "parse_window",
    "prediction_frame",
    "profile_with_predictions",
    "reference_tags",
    "render_history_html",
    "render_html",
    "report_json",
    "run_monitor",
    "save_calibration",
    "save_reference",
    "set_reference",
    "summarize",
    "version_metrics",
]
