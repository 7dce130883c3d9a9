"""A model's monitoring history as one self-contained HTML page of charts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._report import html_page

if TYPE_CHECKING:
    from modelloop.store import AlertEventRecord, MonitoringRecord

__all__ = ["render_history_html"]


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _when(ms: int) -> str:
    return _datetime(ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def _runs_table(records: Sequence[MonitoringRecord]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "when",
            "versions (rows)",
            "rows",
            "drifted share",
            "drifted columns",
            "live metrics, all versions",
        )
    )
    body = []
    for r in reversed(records):  # newest first
        versions = r.payload.get("versions") or []
        served = ", ".join(f"v{v['version']} ({v['rows']:,})" for v in versions) or (
            f"v{r.model_version}" if r.model_version is not None else ""
        )
        share = "" if r.share_drifted is None else f"{r.share_drifted:.0%}"
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in r.metrics.items() if v is not None)
        cls = ' class="drifted"' if r.dataset_drift else ""
        body.append(
            f"<tr{cls}><td>{_when(r.created_at)}</td><td>{html.escape(served)}</td>"
            f"<td>{r.num_rows:,}</td><td>{share}</td>"
            f"<td>{html.escape(', '.join(r.drifted_columns) or 'none')}</td>"
            f"<td>{html.escape(metrics)}</td></tr>"
        )
    return f"<h2>Runs, newest first</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def _alerts_table(events: Sequence[AlertEventRecord]) -> str:
    if not events:
        return "<h2>Alerts</h2><p>No alert has fired.</p>"
    body = "".join(
        f"<tr class='{e.status}'><td>{_when(e.timestamp)}</td><td>{html.escape(e.rule)}</td>"
        f"<td>{e.status}</td><td>{html.escape(e.message)}</td></tr>"
        for e in reversed(events)
    )
    return (
        "<h2>Alerts, newest first</h2><table><tr><th>when</th><th>rule</th><th>status</th>"
        f"<th>message</th></tr>{body}</table>"
    )


def render_history_html(
    model: str,
    records: Sequence[MonitoringRecord],
    alert_events: Sequence[AlertEventRecord] = (),
) -> str:
    """Drift share and live metrics over time, one point per stored monitoring run, then a table
    of the runs (versions, drifted columns, metrics) and of the alert events; plotly.js is
    inlined from the installed package (no CDN)."""
    from plotly.subplots import make_subplots

    if not records:
        raise InvalidInput(f"model {model!r} has no stored monitoring results")
    when = [_datetime(r.created_at) for r in records]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("Share of drifted input columns", "Live metrics, all served versions"),
    )
    fig.add_scatter(
        x=when,
        y=[r.share_drifted for r in records],
        mode="lines+markers",
        name="drift share",
        text=[", ".join(r.drifted_columns) or "none" for r in records],
        hovertemplate="%{x}<br>%{y:.0%} drifted: %{text}<extra></extra>",
        row=1,
        col=1,
    )
    metrics = sorted({k for r in records for k, v in r.metrics.items() if v is not None})
    for name in metrics:
        fig.add_scatter(
            x=when,
            y=[r.metrics.get(name) for r in records],
            mode="lines+markers",
            name=name,
            row=2,
            col=1,
        )
    # after a retrain a window holds several versions: chart each one's own metrics too
    if any(len(r.payload.get("versions") or []) > 1 for r in records):
        per: dict[tuple[str, int], dict[int, float]] = {}
        for i, r in enumerate(records):
            for v in r.payload.get("versions") or []:
                for k, value in (v.get("metrics") or {}).items():
                    if value is not None:
                        per.setdefault((k, int(v["version"])), {})[i] = value
        for (name, version), points in sorted(per.items()):
            fig.add_scatter(
                x=[when[i] for i in sorted(points)],
                y=[points[i] for i in sorted(points)],
                mode="lines+markers",
                line_dash="dot",
                name=f"{name} v{version}",
                row=2,
                col=1,
            )
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    fig.update_layout(height=700, title=f"{model}: monitoring history ({len(records)} runs)")
    body = fig.to_html(full_html=False, include_plotlyjs=False)
    return html_page(
        f"{model} monitoring history",
        f"{body}{_alerts_table(alert_events)}{_runs_table(records)}",
    )
