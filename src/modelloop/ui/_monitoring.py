"""A model's monitoring page: drift share and per-feature drift over time, live metrics overall
and by segment, data quality, alerts (current state and their history), and prediction volume
and latency from the serving history. Every part may be missing: it then says so."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import ModelloopError, NotFound
from modelloop.ui._app import client_of, render
from modelloop.ui._charts import finite

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request
    from starlette.responses import Response

    from modelloop.store import MonitoringRecord

__all__ = ["monitoring_page"]

#: results shown (the newest ones)
MAX_RESULTS = 500
#: serving intervals shown (the newest ones)
MAX_OPS_ROWS = 2_000
#: the live metrics charted by segment, in this order when present
_SEGMENT_METRICS = ("accuracy", "f1", "auc", "mae", "rmse")
#: performance groups that are not segments
_NOT_SEGMENTS = ("window", "model_version")


def _when(record: MonitoringRecord) -> int:
    return record.window_end if record.window_end is not None else record.created_at


def _feature_drift(records: list[MonitoringRecord]) -> dict[str, Any]:
    """Columns x results: each column's drift statistic, and whether it drifted."""
    columns: dict[str, dict[int, tuple[float | None, bool, str]]] = {}
    for i, rec in enumerate(records):
        drift = rec.payload.get("drift") or {}
        for col in drift.get("columns") or ():
            if not isinstance(col, dict) or not isinstance(col.get("column"), str):
                continue
            entry = (
                finite(col.get("statistic")),
                bool(col.get("drifted")),
                str(col.get("method")),
            )
            columns.setdefault(col["column"], {})[i] = entry
    names = sorted(columns)
    return {
        "columns": names,
        "statistic": [[columns[c].get(i, (None,))[0] for i in range(len(records))] for c in names],
        "drifted": [
            [bool(columns[c].get(i, (None, False))[1]) for i in range(len(records))] for c in names
        ],
        "method": [next(iter(columns[c].values()))[2] for c in names],
    }


def _segment_rows(payload: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The segment column and its rows (segment value, labelled rows, metrics) of one result's
    live performance; ``("", [])`` when it was not split by segment."""
    perf = payload.get("performance")
    if not isinstance(perf, dict):
        return "", []
    names = [k for k in perf.get("keys") or () if isinstance(k, str) and k not in _NOT_SEGMENTS]
    if not names:
        return "", []
    column = names[0]
    rows = []
    for row in perf.get("rows") or ():
        group = row.get("group") if isinstance(row, dict) else None
        if not isinstance(group, dict) or list(group) != [column]:
            continue
        metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        rows.append({"segment": str(group[column]), "n": row.get("n"), "metrics": metrics})
    return column, rows


def _segments(records: list[MonitoringRecord]) -> dict[str, Any]:
    """Live metrics by segment over time, and the newest result's segment table and gaps."""
    column = ""
    per_result = []
    for rec in records:
        col, rows = _segment_rows(rec.payload)
        column = column or col
        per_result.append({r["segment"]: r for r in rows} if col == column else {})
    segments = sorted({s for rows in per_result for s in rows})
    present = {k for rows in per_result for r in rows.values() for k in r["metrics"]}
    metrics = [m for m in _SEGMENT_METRICS if m in present]
    series = {
        m: {s: [finite((rows.get(s) or {}).get("metrics", {}).get(m)) for rows in per_result]
            for s in segments}
        for m in metrics
    }  # fmt: skip
    latest: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    for rec, rows in zip(reversed(records), reversed(per_result), strict=True):
        if rows:
            latest = [rows[s] for s in sorted(rows)]
            perf = rec.payload.get("performance") or {}
            gaps = [g for g in perf.get("gaps") or () if isinstance(g, dict)]
            break
    return {
        "column": column,
        "segments": segments,
        "metrics": metrics,
        "series": series,
        "latest": latest,
        "gaps": gaps,
    }


def _quality(records: list[MonitoringRecord]) -> dict[str, Any]:
    """Failed data-quality checks per result by kind of issue, and the newest checked result."""
    kinds: dict[str, list[int]] = {}
    checked = [False] * len(records)
    latest: dict[str, Any] | None = None
    latest_at: int | None = None
    for i, rec in enumerate(records):
        quality = rec.payload.get("quality")
        if not isinstance(quality, dict):
            continue
        checked[i] = True
        for col in quality.get("columns") or ():
            for issue in (col.get("issues") or ()) if isinstance(col, dict) else ():
                kinds.setdefault(str(issue), [0] * len(records))[i] += 1
        latest, latest_at = quality, _when(rec)
    columns = []
    if latest is not None:
        for col in latest.get("columns") or ():
            if isinstance(col, dict):
                columns.append(
                    {
                        "column": str(col.get("column", "")),
                        "kind": str(col.get("kind", "")),
                        "missing_reference": finite(col.get("missing_rate_reference")),
                        "missing_current": finite(col.get("missing_rate_current")),
                        "out_of_range": finite(col.get("out_of_range_share")),
                        "unseen": finite(col.get("unseen_share")),
                        "unseen_categories": [str(c) for c in col.get("unseen_categories") or ()],
                        "issues": [str(i) for i in col.get("issues") or ()],
                    }
                )
        columns.sort(key=lambda c: (not c["issues"], c["column"]))
    issues = {k: [n if checked[i] else None for i, n in enumerate(v)] for k, v in kinds.items()}
    return {
        "checked": checked,
        "issues": issues,
        "latest": columns,
        "latest_at": latest_at,
        "thresholds": {k: finite(latest.get(k)) for k in ("missing_jump", "out_of_range", "unseen")}
        if latest
        else {},
    }


def _serving(home: Path, name: str) -> tuple[dict[str, Any] | None, str]:
    """Requests, errors and latency quantiles per interval from the serving history of
    ``modelloop serve`` (its newest intervals), or None and why there is none."""
    from modelloop.aiops import read_ops_history

    try:
        frame = read_ops_history(name, home=home)
    except NotFound:
        return None, "No serving history yet: modelloop serve records it while it serves the model."
    except ModelloopError as exc:  # a bad model name for a path, an unreadable segment
        return None, f"The serving history cannot be read: {exc}"
    if frame.empty:
        return None, "The serving history holds no interval yet."
    frame = frame.tail(MAX_OPS_ROWS)

    def column(name: str) -> list[float | None]:
        if name not in frame.columns:
            return []
        return [finite(v) for v in frame[name].tolist()]

    errors = [
        (a or 0) + (b or 0) for a, b in zip(column("errors_4xx"), column("errors_5xx"), strict=True)
    ]
    requests = column("requests")
    return {
        "time": [int(t.timestamp() * 1000) for t in frame["timestamp"]],
        "requests": requests,
        "errors": errors,
        "rejected": column("rejected"),
        "p50": column("latency_p50_ms"),
        "p95": column("latency_p95_ms"),
        "p99": column("latency_p99_ms"),
        "total_requests": int(sum(r or 0 for r in requests)),
        "total_errors": int(sum(errors)),
        "intervals": len(frame),
    }, ""


def _alert_spans(events: list[Any], alerts: list[Any]) -> dict[str, Any]:
    """Per rule, the spans it fired (start, end; end None while it still fires), from the
    alert events oldest first."""
    spans: dict[str, list[list[int | None]]] = {}
    for e in events:
        rule_spans = spans.setdefault(e.rule, [])
        if e.status == "firing":
            rule_spans.append([e.timestamp, None])
        elif rule_spans and rule_spans[-1][1] is None:
            rule_spans[-1][1] = e.timestamp
    still = {a.rule for a in alerts if a.firing}
    for rule, rule_spans in spans.items():
        if rule_spans and rule_spans[-1][1] is None and rule not in still:
            rule_spans[-1][1] = rule_spans[-1][0]  # resolved without a recorded event
    return {"rules": sorted(spans), "spans": spans}


def monitoring_page(request: Request) -> Response:
    """Everything stored about a model's monitoring (it need not be registered)."""
    client = client_of(request)
    store = client.store
    name = request.path_params["name"]
    records = store.list_monitoring_results(name, limit=MAX_RESULTS)
    metric_keys = sorted({k for r in records for k in r.metrics})
    serving, serving_note = _serving(client.settings.home, name)
    charts = {
        "time": [_when(r) for r in records],
        "share_drifted": [finite(r.share_drifted) for r in records],
        "num_rows": [r.num_rows for r in records],
        "metrics": {k: [finite(r.metrics.get(k)) for r in records] for k in metric_keys},
        "features": _feature_drift(records),
        "segments": _segments(records),
        "quality": _quality(records),
        "serving": serving,
    }
    alerts = store.list_alerts(name)
    events = store.list_alert_events(name, limit=200)  # oldest first
    charts["alerts"] = _alert_spans(events, alerts)
    return render(
        request,
        "monitoring.html",
        {
            "title": f"Monitoring of {name}",
            "name": name,
            "records": list(reversed(records)),  # newest first in the table
            "alerts": alerts,
            "firing": sum(1 for a in alerts if a.firing),
            "events": list(reversed(events)),
            "charts": charts,
            "serving_note": serving_note,
        },
    )
