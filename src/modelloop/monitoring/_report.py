"""Reports: one self-contained HTML file (Plotly, plotly.js inlined once) and a JSON form.

Per-feature plots come from the reference profile and the window summary alone, so a report never
needs raw data: numeric columns as densities on reference-quantile bins (plus the shares below and
above the reference range), categorical columns as category shares side by side.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._performance import PerformanceReport
from modelloop.monitoring._profile import CategoricalProfile, NumericProfile, ReferenceProfile
from modelloop.monitoring._quality import QualityReport
from modelloop.monitoring._result import DriftResult
from modelloop.monitoring._summary import CategoricalSummary, NumericSummary, WindowSummary

__all__ = ["render_html", "report_json"]

REF_COLOR, CUR_COLOR = "#4C78A8", "#F58518"


def report_json(
    drift: DriftResult | None = None,
    *,
    quality: QualityReport | None = None,
    performance: PerformanceReport | None = None,
    meta: Mapping[str, Any] | None = None,
    prediction_drift: DriftResult | None = None,
) -> dict[str, Any]:
    """The JSON form of a report: every part's ``to_dict()`` under one object."""
    return {
        "meta": dict(meta or {}),
        "drift": drift.to_dict() if drift else None,
        "prediction_drift": prediction_drift.to_dict() if prediction_drift else None,
        "quality": quality.to_dict() if quality else None,
        "performance": performance.to_dict() if performance else None,
    }


def _numeric_figure(ref: NumericProfile, cur: NumericSummary, bins: int) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    if ref.count == 0 or len(ref.edges) < 2:
        return fig
    cum = ref.cum_le
    cut = np.unique(np.searchsorted(cum, np.arange(1, bins) * ref.count / bins, side="left"))
    idx = np.unique(np.concatenate([[0], cut[cut < len(cum) - 1], [len(cum) - 1]]))
    edges = ref.edges[idx]
    widths = np.diff(edges)
    ok = widths > 0
    left, width = edges[:-1][ok], widths[ok]
    r_mass = np.diff(np.concatenate([[0], cum[idx[1:-1]], [ref.count]]))[ok] / ref.count
    traces = [("reference", REF_COLOR, r_mass)]
    if cur.count:
        # the first bin starts at the reference minimum: values below it are shown apart
        c_cum = np.concatenate([[cur.below_count], cur.le[idx[1:-1]], [cur.le[-1]]])
        traces.append(("current", CUR_COLOR, np.diff(c_cum)[ok] / cur.count))
    for name, color, mass in traces:
        fig.add_bar(
            x=left + width / 2,
            y=mass / width,
            width=width,
            name=name,
            marker_color=color,
            opacity=0.55,
        )
    if cur.count and (cur.below_count or cur.above_count):
        fig.add_annotation(
            text=f"current outside reference range: {cur.below_count / cur.count:.1%} below, "
            f"{cur.above_count / cur.count:.1%} above",
            xref="paper",
            yref="paper",
            x=0,
            y=1.08,
            showarrow=False,
        )
    fig.update_layout(barmode="overlay", yaxis_title="density", bargap=0)
    return fig


def _categorical_figure(ref: CategoricalProfile, cur: CategoricalSummary, top: int) -> Any:
    import plotly.graph_objects as go

    labels = list(ref.categories)[:top]
    extra = [
        k
        for k, _ in sorted(cur.categories.items(), key=lambda kv: -kv[1])
        if k not in ref.categories
    ]
    labels += extra[: max(0, top - len(labels))]
    fig = go.Figure()
    for name, counts, n, color in (
        ("reference", ref.categories, ref.count, REF_COLOR),
        ("current", cur.categories, cur.count, CUR_COLOR),
    ):
        if n:
            fig.add_bar(
                x=labels, y=[counts.get(k, 0) / n for k in labels], name=name, marker_color=color
            )
    fig.update_layout(barmode="group", yaxis_title="share", yaxis_tickformat=".0%")
    return fig


def _performance_figure(perf: PerformanceReport) -> Any | None:
    import plotly.graph_objects as go

    rows = [r for r in perf.rows if "window" in r.group]
    if not rows:
        return None
    fig = go.Figure()
    series: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={v}" for k, v in r.group.items() if k != "window")
        for m, v in r.metrics.items():
            if v is not None:
                series.setdefault((m, label), []).append((r.group["window"], v))
    for (m, label), pts in sorted(series.items()):
        pts.sort()
        fig.add_scatter(
            x=[p[0] for p in pts],
            y=[p[1] for p in pts],
            mode="lines+markers",
            name=f"{m} {label}".strip(),
        )
    fig.update_layout(title="Live performance over time", xaxis_title="window")
    return fig


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    return f"{x:.{digits}g}"


def _table(drift: DriftResult, quality: QualityReport | None) -> str:
    issues = {c.column: ", ".join(c.issues) for c in quality.columns} if quality else {}
    head = (
        "<tr><th>column</th><th>kind</th><th>method</th><th>statistic</th><th>p-value</th>"
        "<th>adjusted p</th><th>threshold</th><th>error bound</th><th>drifted</th>"
        "<th>data quality</th></tr>"
    )
    body = []
    for c in drift.columns:
        cls = ' class="drifted"' if c.drifted else ""
        body.append(
            f"<tr{cls}><td>{html.escape(c.column)}</td><td>{c.kind}</td><td>{c.method}</td>"
            f"<td>{_fmt(c.statistic)}</td><td>{_fmt(c.p_value, 3)}</td>"
            f"<td>{_fmt(c.adjusted_p_value, 3)}</td><td>{_fmt(c.threshold)}</td>"
            f"<td>{_fmt(c.error_bound, 2)}</td><td>{'yes' if c.drifted else 'no'}</td>"
            f"<td>{html.escape(issues.get(c.column, ''))}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px}
tr.drifted td{background:#fde2d0}.feature{margin-top:2em}
"""


def _groups_table(perf: PerformanceReport) -> str:
    """Metrics per segment and per model version (rows not split by time), with the gaps."""
    rows = [r for r in perf.rows if "window" not in r.group]
    if not rows:
        return ""
    names = list(perf.overall.metrics)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["group", "n", *names])
    body = "".join(
        "<tr><td>"
        + html.escape(", ".join(f"{k}={v}" for k, v in r.group.items()))
        + f"</td><td>{r.n}</td>"
        + "".join(f"<td>{_fmt(r.metrics.get(n))}</td>" for n in names)
        + "</tr>"
        for r in rows
    )
    gaps = "".join(
        f"<li>{html.escape(g.metric)}: {_fmt(g.gap)} between {html.escape(g.max_segment)} "
        f"({_fmt(g.max)}) and {html.escape(g.min_segment)} ({_fmt(g.min)})</li>"
        for g in perf.gaps
        if not g.group
    )
    gaps_html = f"<p>Gaps between segments:</p><ul>{gaps}</ul>" if gaps else ""
    return f"<table><tr>{head}</tr>{body}</table>{gaps_html}"


def render_html(
    profile: ReferenceProfile,
    summary: WindowSummary,
    drift: DriftResult,
    *,
    quality: QualityReport | None = None,
    performance: PerformanceReport | None = None,
    prediction_drift: DriftResult | None = None,
    title: str = "Monitoring report",
    bins: int = 40,
    top_categories: int = 20,
) -> str:
    """One self-contained HTML page: verdict, drift table, one plot per feature, performance.

    plotly.js is taken from the installed plotly package and inlined once; nothing is fetched.
    """
    from plotly.offline import get_plotlyjs

    parts: list[str] = []
    outputs = prediction_drift.columns if prediction_drift is not None else ()
    for i, col in enumerate((*drift.columns, *outputs)):
        name = col.column
        ref = profile[name]
        cur = summary.columns.get(name)
        if cur is None:
            raise InvalidInput(f"the window summary has no column {name!r}")
        if isinstance(ref, NumericProfile) and isinstance(cur, NumericSummary):
            fig = _numeric_figure(ref, cur, bins)
        elif isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalSummary):
            fig = _categorical_figure(ref, cur, top_categories)
        else:
            raise InvalidInput(f"column {name!r} has a different kind in profile and summary")
        verdict = "drifted" if col.drifted else "no drift"
        fig.update_layout(
            title=f"{name} — {col.method} {_fmt(col.statistic)} ({verdict})", height=340
        )
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"feature-{i}")
        parts.append(f'<div class="feature">{div}</div>')
    perf_html = ""
    if performance is not None:
        fig = _performance_figure(performance)
        overall = ", ".join(
            f"{k} {_fmt(v)}" for k, v in performance.overall.metrics.items() if v is not None
        )
        perf_html = (
            f"<h2>Live performance</h2><p>overall (n={performance.overall.n}): {overall}</p>"
        )
        perf_html += _groups_table(performance)
        if fig is not None:
            perf_html += fig.to_html(full_html=False, include_plotlyjs=False, div_id="performance")
    output_html = ""
    if prediction_drift is not None:
        output_html = (
            "<h2>Prediction drift</h2><p>The model's outputs, reported apart from the inputs' "
            f"verdict.</p>{_table(prediction_drift, quality)}"
        )
    share = f"{drift.share_drifted:.0%}"
    verdict = "DATASET DRIFT" if drift.dataset_drift else "no dataset drift"
    summary_html = (
        f"<p><b>{verdict}</b>: {len(drift.drifted_columns)} of {drift.n_tested} columns drifted "
        f"({share}; threshold {drift.drift_share:.0%}). Reference rows: {drift.n_reference}, "
        f"current rows: {drift.n_current}. p-values corrected with {drift.correction}.</p>"
    )
    # script content is raw text: only "</" could end it early
    data = json.dumps(
        report_json(
            drift,
            quality=quality,
            performance=performance,
            prediction_drift=prediction_drift,
        )
    )
    data = data.replace("</", "<\\/")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{html.escape(title)}</h1>{summary_html}<h2>Drift by column</h2>"
        f"{_table(drift, quality)}{output_html}{perf_html}"
        "<h2>Distributions, reference vs current</h2>"
        f"{''.join(parts)}"
        f"<script type='application/json' id='report-data'>{data}</script></body></html>"
    )
