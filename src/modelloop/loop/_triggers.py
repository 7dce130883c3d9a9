"""The loop's triggers, read from what monitoring stored, the registry and the feedback log.

``calibrated_drift`` reads the history-calibrated verdict a monitoring result holds when the model
version was calibrated (``modelloop monitor calibrate``); results without one never fire it.

Monitoring-based triggers look only at results stored after the last retrain began and newer than
the last result that fired, so one drifted window starts one retrain, not one per tick. Live
metrics are the champion's own (its rows of the window, when the result holds per-version figures),
and a metric's drop is measured from the first value the loop saw for that version.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import NotFound
from modelloop.loop._policy import REGRESSION_METRICS

if TYPE_CHECKING:
    from modelloop.loop._policy import TriggerSpec
    from modelloop.store import MonitoringRecord, Store

__all__ = ["check_triggers", "labels_since"]


def labels_since(home: str | Path, model: str, since_ms: int | None) -> int:
    """Feedback labels recorded for ``model`` at or after ``since_ms`` (all when None)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from modelloop.monitoring._logfiles import segment_files

    since_ns = since_ms * 1_000_000 if since_ms is not None else None
    files, fs = segment_files(home, "feedback", model, since_ns)  # a shared root: those hours
    total = 0
    for f in files:
        table = pq.read_table(f, columns=["timestamp"], filesystem=fs)
        if since_ms is None:
            total += table.num_rows
            continue
        ms = pc.cast(table.column("timestamp"), "int64")  # timestamp[ms] -> epoch ms
        total += int(pc.sum(pc.greater_equal(ms, since_ms)).as_py() or 0)
    return total


def _champion_view(record: MonitoringRecord, champion: int | None) -> tuple[dict[str, Any], Any]:
    """(live metrics, prediction-drift verdict) of the champion's rows in a stored result."""
    payload = dict(record.payload)
    for window in payload.get("versions") or []:
        if champion is not None and window.get("version") == champion:
            drift = (window.get("prediction_drift") or {}).get("dataset_drift")
            return dict(window.get("metrics") or {}), drift
    drift = (payload.get("prediction_drift") or {}).get("dataset_drift")
    return dict(record.metrics), drift


def check_triggers(
    store: Store,
    model: str,
    spec: TriggerSpec,
    *,
    home: str | Path,
    memo: dict[str, Any],
    now: int,
) -> list[dict[str, Any]]:
    """Every trigger that fires now, each as ``{"trigger", "message", ...evidence}``. Updates
    ``memo["baseline"]`` with the first live metrics seen per version (for ``metric_drop``)."""
    fired: list[dict[str, Any]] = []
    last_retrain = memo.get("last_retrain_at")
    try:
        champion_mv = store.get_version_by_alias(model, "champion")
        champion: int | None = champion_mv.version
    except NotFound:
        champion_mv, champion = None, None

    records = store.list_monitoring_results(model, limit=1)
    record = records[-1] if records else None
    fresh = (
        record is not None
        and (last_retrain is None or record.created_at > last_retrain)
        and record.result_id > int(memo.get("last_result_id") or 0)
    )
    if record is not None and fresh:
        base = {"result_id": record.result_id, "model_version": record.model_version}
        share = record.share_drifted
        if spec.drift_share is not None and share is not None and share >= spec.drift_share:
            fired.append(
                {
                    **base,
                    "trigger": "drift_share",
                    "message": f"drift share {share:.2f} >= {spec.drift_share:g}",
                    "value": share,
                    "threshold": spec.drift_share,
                }
            )
        calibrated = dict(record.payload).get("calibrated") or {}
        cal_share = calibrated.get("share_flagged")
        limit = spec.calibrated_drift
        if limit is not None and cal_share is not None and cal_share >= limit:
            flagged = list(calibrated.get("flagged_columns") or [])
            fired.append(
                {
                    **base,
                    "trigger": "calibrated_drift",
                    "message": f"{cal_share:.2f} of inputs outside their history-calibrated "
                    f"range >= {limit:g}: {', '.join(flagged)}",
                    "value": cal_share,
                    "threshold": limit,
                    "columns": flagged,
                }
            )
        hit = sorted(set(spec.drifted_features) & set(record.drifted_columns))
        if hit:
            fired.append(
                {
                    **base,
                    "trigger": "drifted_features",
                    "message": f"drifted: {', '.join(hit)}",
                    "columns": hit,
                }
            )
        metrics, prediction_drift = _champion_view(record, champion)
        if spec.prediction_drift and prediction_drift:
            fired.append({**base, "trigger": "prediction_drift", "message": "prediction drift"})
        baselines = memo.setdefault("baseline", {})
        seen = baselines.setdefault(str(champion), {})
        for name, value in metrics.items():
            if value is not None and name not in seen:
                seen[name] = value
        for name, floor in spec.metric_floor.items():
            value = metrics.get(name)
            if value is not None and _below(name, value, floor):
                fired.append(
                    {
                        **base,
                        "trigger": "metric_floor",
                        "message": f"live {name} {value:.4f} past its floor {floor:g}",
                        "metric": name,
                        "value": value,
                        "threshold": floor,
                    }
                )
        for name, drop in spec.metric_drop.items():
            value, first = metrics.get(name), seen.get(name)
            if value is None or first is None:
                continue
            change = (value - first) if name in REGRESSION_METRICS else (first - value)
            if change > drop:
                fired.append(
                    {
                        **base,
                        "trigger": "metric_drop",
                        "message": f"live {name} {value:.4f} moved {change:.4f} from {first:.4f}",
                        "metric": name,
                        "value": value,
                        "baseline": first,
                        "threshold": drop,
                    }
                )
    if spec.max_age_s is not None and champion_mv is not None:
        born = max(champion_mv.created_at, int(last_retrain or 0))
        age_s = (now - born) / 1000
        if age_s > spec.max_age_s:
            fired.append(
                {
                    "trigger": "max_age",
                    "message": f"champion v{champion} is {age_s / 86400:.1f} days old",
                    "value": age_s,
                    "threshold": spec.max_age_s,
                }
            )
    if spec.new_labels is not None:
        n = labels_since(home, model, last_retrain)
        if n >= spec.new_labels:
            fired.append(
                {
                    "trigger": "new_labels",
                    "message": f"{n} new labels since the last retrain",
                    "value": n,
                    "threshold": spec.new_labels,
                }
            )
    return fired


def _below(name: str, value: float, floor: float) -> bool:
    """Past the floor: under it for scores, over it for errors (mae, rmse)."""
    return value > floor if name in REGRESSION_METRICS else value < floor
