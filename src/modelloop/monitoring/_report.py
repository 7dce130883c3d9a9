"""Reports: one self-contained HTML file (Plotly, plotly.js inlined once) and a JSON form.

Per-feature plots come from the reference profile and the window summary alone, so a report never
needs raw data: numeric columns as densities on equal-width bins beside the two ECDFs, on an
axis clipped to the bulk of the values (the shares beyond it are written out), categorical columns
as category shares side by side. Each served version's outputs get their own section, against
that version's own reference.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelloop.exceptions import InvalidInput
from modelloop.monitoring._calibration import CalibratedDrift
from modelloop.monitoring._performance import PerformanceReport
from modelloop.monitoring._profile import CategoricalProfile, NumericProfile, ReferenceProfile
from modelloop.monitoring._quality import QualityReport
from modelloop.monitoring._result import ColumnDrift, DriftResult
from modelloop.monitoring._summary import CategoricalSummary, NumericSummary, WindowSummary
from modelloop.monitoring._versions import VersionWindow

__all__ = ["render_html", "report_json"]

REF_COLOR, CUR_COLOR = "#4C78A8", "#F58518"
#: The plots of numeric columns show the values between these quantiles; the rest is counted.
BULK = (0.005, 0.995)

#: One sentence per method: what the statistic measures and when it says "drifted".
METHOD_TEXT = {
    "ks_effect": "Kolmogorov-Smirnov distance beyond a negligible effect (numeric, the default at "
    "every window size): the largest vertical gap between the reference and current ECDFs, i.e. "
    "the share of the mass that moved; drifted when its 1 - alpha lower confidence bound "
    "(Dvoretzky-Kiefer-Wolfowitz) lies above the negligible effect, i.e. when the corrected "
    "p-value of 'distance <= negligible effect' is below alpha. Small windows give wide bounds "
    "(only clear shifts are flagged), large ones narrow bounds (tiny shifts are never flagged).",
    "tv_effect": "Total variation distance beyond a negligible effect (categorical, the default "
    "at every window size): half the sum of the absolute differences of the category shares; "
    "drifted when its 1 - alpha lower confidence bound lies above the negligible effect.",
    "ks": "Kolmogorov-Smirnov test (numeric): the largest vertical gap "
    "between the reference and current ECDFs; drifted when its corrected p-value is below the "
    "threshold (alpha).",
    "wasserstein": "Wasserstein distance (numeric): the area between the two "
    "ECDFs, i.e. how far values moved on average, in reference standard deviations; a score "
    "without p-value, drifted when it reaches the threshold.",
    "psi": "Population stability index (numeric): the sum over reference-quantile bins of "
    "(current share - reference share) x ln(current share / reference share); drifted when it "
    "reaches the threshold.",
    "chi2": "Chi-squared test (categorical) on the 2 x k table of "
    "category counts; drifted when its corrected p-value is below the threshold (alpha).",
    "jensenshannon": "Jensen-Shannon distance (categorical) between the two "
    "category distributions, from 0 (same) to 1 (disjoint); a score without p-value, drifted "
    "when it reaches the threshold.",
}


def report_json(
    drift: DriftResult | None = None,
    *,
    quality: QualityReport | None = None,
    performance: PerformanceReport | None = None,
    meta: Mapping[str, Any] | None = None,
    prediction_drift: DriftResult | None = None,
    versions: Sequence[VersionWindow] = (),
) -> dict[str, Any]:
    """The JSON form of a report: every part's ``to_dict()`` under one object."""
    return {
        "meta": dict(meta or {}),
        "drift": drift.to_dict() if drift else None,
        "prediction_drift": prediction_drift.to_dict() if prediction_drift else None,
        "quality": quality.to_dict() if quality else None,
        "performance": performance.to_dict() if performance else None,
        "versions": [v.to_dict() for v in versions],
    }


def _cut(cum: np.ndarray, count: int, share: float) -> int:
    """Index of the first edge at or below which at least ``share`` of ``count`` values lie."""
    return min(int(np.searchsorted(cum, share * count, side="left")), len(cum) - 1)


def _numeric_figure(ref: NumericProfile, cur: NumericSummary, bins: int) -> Any:
    """Densities on equal-width bins beside the two ECDFs (what KS and Wasserstein measure),
    both on an axis clipped to the bulk of the data: the middle 99% of the reference
    and of the current values. The shares beyond the axis are written above the plots."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("density", "cumulative share (ECDF)"),
        horizontal_spacing=0.1,
    )
    if ref.count == 0 or len(ref.edges) < 2:
        return fig
    cum = ref.cum_le
    lo, hi = _cut(cum, ref.count, BULK[0]), _cut(cum, ref.count, BULK[1])
    c_le = np.asarray(cur.le)
    if cur.count:  # widen to the current bulk where it lies inside the reference range
        lo = min(lo, _cut(c_le, cur.count, BULK[0]))
        hi = max(hi, _cut(c_le, cur.count, BULK[1]))
    if hi <= lo:
        lo, hi = 0, len(cum) - 1
    # densities: equal-width bins over [edges[lo], edges[hi]], snapped to the profile's edges
    # (quantile bins would make a skewed column one needle and a flat line)
    targets = np.linspace(ref.edges[lo], ref.edges[hi], bins + 1)
    idx = np.unique(np.clip(np.searchsorted(ref.edges, targets, side="left"), lo, hi))
    edges = ref.edges[idx]
    widths = np.diff(edges)
    ok = widths > 0
    left, width = edges[:-1][ok], widths[ok]
    # (le, lt): values at or below / strictly below each edge; the first bin and the axis
    # include the values equal to its first edge
    sides = [("reference", REF_COLOR, cum, cum - np.asarray(ref.counts)[0::2], ref.count)]
    if cur.count:
        sides.append(("current", CUR_COLOR, c_le, np.asarray(cur.lt), cur.count))
    beyond = []
    xs = ref.edges[lo : hi + 1]
    for name, color, le, lt, n in sides:
        mass = np.diff(np.concatenate([[lt[idx[0]]], le[idx[1:]]]))[ok] / n
        fig.add_bar(
            x=left + width / 2,
            y=mass / width,
            width=width,
            name=name,
            legendgroup=name,
            marker_color=color,
            opacity=0.55,
            row=1,
            col=1,
        )
        fig.add_scatter(
            x=xs,
            y=le[lo : hi + 1] / n,
            mode="lines",
            line_shape="hv",
            name=name,
            legendgroup=name,
            showlegend=False,
            line_color=color,
            row=1,
            col=2,
        )
        below, above = lt[lo] / n, 1 - le[hi] / n
        if below >= 0.0005 or above >= 0.0005:
            beyond.append(f"{name} {below:.1%} below / {above:.1%} above")
    # read by _feature_plots, which writes it under the figure's title
    fig.layout.meta = {
        "clip": f"axis clipped to [{ref.edges[lo]:.4g}, {ref.edges[hi]:.4g}]"
        + (", beyond it: " + ", ".join(beyond) if beyond else "")
    }
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_yaxes(title_text="density", row=1, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=2)
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


def _has_p_values(drift: DriftResult) -> bool:
    """Whether any column was judged by a test; distance scores alone have no p-value."""
    return any(c.p_value is not None for c in drift.columns)


def _table(drift: DriftResult, quality: QualityReport | None) -> str:
    issues = {c.column: ", ".join(c.issues) for c in quality.columns} if quality else {}
    tests = _has_p_values(drift)  # else no p-value column at all
    effects = any(c.min_effect is not None for c in drift.columns)
    names = ["column", "kind", "method", "statistic"]
    names += ["lower bound", "negligible effect"] if effects else []
    names += ["p-value", f"p-value ({drift.correction})"] if tests else []
    names += ["threshold", "error bound", "verdict", "why", "data quality"]
    head = "<tr>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    body = []
    for c in drift.columns:
        cls = ' class="drifted"' if c.drifted or c.status == "out of range" else ""
        ps = f"<td>{_fmt(c.p_value, 3)}</td><td>{_fmt(c.adjusted_p_value, 3)}</td>" if tests else ""
        es = f"<td>{_fmt(c.ci_low)}</td><td>{_fmt(c.min_effect)}</td>" if effects else ""
        body.append(
            f"<tr{cls}><td>{html.escape(c.column)}</td><td>{c.kind}</td><td>{c.method}</td>"
            f"<td>{_fmt(c.statistic)}</td>{es}{ps}<td>{_fmt(c.threshold)}</td>"
            f"<td>{_fmt(c.error_bound, 2)}</td><td>{html.escape(c.verdict)}</td>"
            f"<td>{html.escape(c.rule)}</td>"
            f"<td>{html.escape(issues.get(c.column, ''))}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _calibrated_html(cal: CalibratedDrift | None) -> str:
    """The history-calibrated verdict: distance, learned normal range and verdict per column."""
    if cal is None:
        return ""
    season = f", season {cal.season} slot {cal.slot}" if cal.season else ""
    verdict = "OUTSIDE ITS NORMAL RANGE" if cal.dataset_drift else "within its normal range"
    head = "".join(
        f"<th>{n}</th>"
        for n in ("column", "distance", "learned normal range", "past windows", "verdict", "note")
    )
    body = []
    for c in cal.columns:
        cls = ' class="drifted"' if c.flagged else ""
        rng = "—" if c.low is None else f"{_fmt(c.low)} .. {_fmt(c.high)}"
        body.append(
            f"<tr{cls}><td>{html.escape(c.column)}</td><td>{_fmt(c.distance)}</td>"
            f"<td>{rng}</td><td>{c.n_windows}</td><td>{html.escape(c.verdict)}</td>"
            f"<td>{html.escape(c.note)}</td></tr>"
        )
    return (
        "<h2>History-calibrated verdict</h2>"
        f"<p><b>{verdict}</b>: {len(cal.flagged_columns)} of {cal.n_judged} columns outside the "
        f"range their distance from the reference takes in healthy past windows (median +- "
        f"{cal.k:g} robust sd{season}; threshold {cal.drift_share:.0%} of columns).</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table>"
    )


def _methods_note(results: Sequence[DriftResult]) -> str:
    """How to read the statistics the tables hold, one sentence per method used."""
    used = dict.fromkeys(c.method for d in results for c in d.columns)
    items = "".join(f"<li>{html.escape(METHOD_TEXT[m])}</li>" for m in used if m in METHOD_TEXT)
    if not items:
        return ""
    return (
        "<details open><summary>How to read the statistics</summary><ul>"
        f"{items}<li>error bound: the most the statistic, computed from the reference profile's "
        "fine histograms, can differ from its value on the raw reference data.</li>"
        "</ul></details>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px}
tr.drifted td,tr.firing td{background:#fde2d0}.feature{margin-top:2em}
"""


def html_page(title: str, body: str) -> str:
    """A self-contained page: the shared style, plotly.js inlined from the installed package
    (nothing is fetched), then ``body``. The history page uses it too."""
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )


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


def _feature_plots(
    profile: ReferenceProfile,
    summary: WindowSummary,
    columns: Sequence[ColumnDrift],
    key: str,
    bins: int,
    top: int,
) -> str:
    parts: list[str] = []
    for i, col in enumerate(columns):
        name = col.column
        ref = profile[name]
        cur = summary.columns.get(name)
        if cur is None:
            raise InvalidInput(f"the window summary has no column {name!r}")
        if col.status:  # datetimes and identifiers: what was found instead of a plot
            parts.append(
                f"<div class='feature'><b>{html.escape(name)}</b>: {html.escape(col.note)}</div>"
            )
            continue
        if isinstance(ref, NumericProfile) and isinstance(cur, NumericSummary):
            fig = _numeric_figure(ref, cur, bins)
        elif isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalSummary):
            fig = _categorical_figure(ref, cur, top)
        else:
            raise InvalidInput(f"column {name!r} has a different kind in profile and summary")
        title = f"{name}: {col.method} {_fmt(col.statistic)} ({col.verdict})"
        meta = fig.layout.meta
        if isinstance(meta, dict) and meta.get("clip"):
            title += f"<br><sup>{html.escape(meta['clip'])}</sup>"
        fig.update_layout(title=title, height=360, margin={"t": 100})
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{key}-{i}")
        parts.append(f'<div class="feature">{div}</div>')
    return "".join(parts)


def _versions_html(
    versions: Sequence[VersionWindow],
    details: Mapping[int, tuple[ReferenceProfile, WindowSummary]],
    bins: int,
    top: int,
) -> str:
    """A table of the served versions, then each version's outputs against its own reference."""
    names = sorted({k for v in versions for k in v.metrics})
    head = "".join(
        f"<th>{html.escape(n)}</th>"
        for n in ["version", "rows", "outputs drifted", "labelled", *names, "note"]
    )
    body = ""
    for v in versions:
        outs = (
            ", ".join(v.prediction_drift.drifted_columns) or "none"
            if v.prediction_drift
            else "not tested"
        )
        body += (
            f"<tr><td>v{v.version}</td><td>{v.rows:,}</td><td>{html.escape(outs)}</td>"
            f"<td>{v.labelled:,}</td>"
            + "".join(f"<td>{_fmt(v.metrics.get(n))}</td>" for n in names)
            + f"<td>{html.escape(v.note)}</td></tr>"
        )
    out = [
        "<h2>Versions in this window</h2><p>Each version's outputs are compared with its own "
        "reference profile and its live metrics come from its own labelled rows.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    ]
    for v in versions:
        if v.prediction_drift is None:
            continue
        out.append(
            f"<h2>Outputs of v{v.version} against its own reference</h2>"
            f"<p>{v.rows:,} rows served by v{v.version}.</p>"
            f"{_table(v.prediction_drift, v.output_quality)}"
        )
        if v.version in details:
            profile, summary = details[v.version]
            out.append(
                _feature_plots(
                    profile, summary, v.prediction_drift.columns, f"v{v.version}", bins, top
                )
            )
    return "".join(out)


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
    versions: Sequence[VersionWindow] = (),
    version_details: Mapping[int, tuple[ReferenceProfile, WindowSummary]] | None = None,
    reference_version: int | None = None,
    calibrated: CalibratedDrift | None = None,
) -> str:
    """One self-contained HTML page: verdict, drift table, one plot per feature, performance.

    ``profile`` and ``summary`` cover the inputs (of ``reference_version`` when given). With
    ``versions`` (and their profiles and output summaries in ``version_details``), each served
    version's outputs get a section; else ``prediction_drift`` is shown against ``profile``.
    With ``calibrated`` (the history-calibrated verdict), each column's distance is shown beside
    its learned normal range. plotly.js is taken from the installed plotly package and inlined
    once; nothing is fetched.
    """
    outputs: tuple[ColumnDrift, ...] = ()
    output_html = ""
    if versions:
        output_html = _versions_html(versions, version_details or {}, bins, top_categories)
    elif prediction_drift is not None:
        outputs = prediction_drift.columns
        output_html = (
            "<h2>Prediction drift</h2><p>The model's outputs, reported apart from the inputs' "
            f"verdict.</p>{_table(prediction_drift, quality)}"
        )
    plots = _feature_plots(
        profile, summary, (*drift.columns, *outputs), "feature", bins, top_categories
    )
    perf_html = ""
    if performance is not None:
        fig = _performance_figure(performance)
        overall = ", ".join(
            f"{k} {_fmt(v)}" for k, v in performance.overall.metrics.items() if v is not None
        )
        scope = "all versions" if len(versions) > 1 else "overall"
        perf_html = (
            f"<h2>Live performance</h2><p>{scope} (n={performance.overall.n}): {overall}</p>"
        )
        perf_html += _groups_table(performance)
        if fig is not None:
            perf_html += fig.to_html(full_html=False, include_plotlyjs=False, div_id="performance")
    share = f"{drift.share_drifted:.0%}"
    verdict = "DATASET DRIFT" if drift.dataset_drift else "no dataset drift"
    against = f" against v{reference_version}'s reference" if reference_version else ""
    if _has_p_values(drift):
        tested = f"p-values corrected over columns with {drift.correction}."
    else:
        tested = (
            "Every column was judged by a distance score, which has no p-value: no correction "
            "applies."
        )
    summary_html = (
        f"<p><b>{verdict}</b> in the inputs{against}: {len(drift.drifted_columns)} of "
        f"{drift.n_tested} columns drifted ({share}; threshold {drift.drift_share:.0%}). "
        f"Reference rows: {drift.n_reference:,}, current rows: {drift.n_current:,}. {tested}</p>"
    )
    # script content is raw text: only "</" could end it early
    data = json.dumps(
        report_json(
            drift,
            quality=quality,
            performance=performance,
            prediction_drift=prediction_drift,
            versions=versions,
        )
    )
    data = data.replace("</", "<\\/")
    notes = _methods_note(
        [drift, *(v.prediction_drift for v in versions if v.prediction_drift)]
        + ([prediction_drift] if prediction_drift is not None and not versions else [])
    )
    return html_page(
        title,
        f"<h1>{html.escape(title)}</h1>{summary_html}<h2>Drift of the inputs by column</h2>"
        f"{_table(drift, quality)}{notes}{_calibrated_html(calibrated)}{output_html}{perf_html}"
        "<h2>Input distributions, reference vs current</h2>"
        f"{plots}"
        f"<script type='application/json' id='report-data'>{data}</script>",
    )
