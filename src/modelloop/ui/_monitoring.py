"""A model's monitoring page: drift share and per-feature drift over time, live metrics,
prediction volume, the stored results, and alerts (current state and their history)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelloop.ui._app import client_of, render
from modelloop.ui._charts import finite

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from modelloop.store import MonitoringRecord

__all__ = ["monitoring_page"]

#: results shown (the newest ones)
MAX_RESULTS = 500


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


def monitoring_page(request: Request) -> Response:
    """Everything stored about a model's monitoring (it need not be registered)."""
    store = client_of(request).store
    name = request.path_params["name"]
    records = store.list_monitoring_results(name, limit=MAX_RESULTS)
    metric_keys = sorted({k for r in records for k in r.metrics})
    charts = {
        "time": [_when(r) for r in records],
        "share_drifted": [finite(r.share_drifted) for r in records],
        "num_rows": [r.num_rows for r in records],
        "metrics": {k: [finite(r.metrics.get(k)) for r in records] for k in metric_keys},
        "features": _feature_drift(records),
    }
    return render(
        request,
        "monitoring.html",
        {
            "title": f"Monitoring of {name}",
            "name": name,
            "records": list(reversed(records)),  # newest first in the table
            "alerts": store.list_alerts(name),
            "events": list(reversed(store.list_alert_events(name, limit=200))),
            "charts": charts,
        },
    )
