"""The loop demo's page: monthly AUC and Brier score of the static and the looped champion, the
canary share over time and every loop event, in one self-contained HTML file."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelloop.demo._loop import LoopDemoResult

__all__ = ["loop_demo_page"]

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em}"
    "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}"
)


def loop_demo_page(result: LoopDemoResult) -> str:
    """One self-contained HTML page: monthly AUC and Brier score of static vs looped, the canary
    share over time, and every loop event. plotly.js is inlined from the installed package."""
    import html

    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    names = {m: datetime(2013, m, 1).strftime("%b") for m in result.months}  # the flights year

    def monthly(title: str, static: dict[int, float], loop: dict[int, float], key: str) -> str:
        fig = go.Figure()
        for label, values in (("static Jan-Feb champion", static), ("looped champion", loop)):
            ms = sorted(values)
            fig.add_trace(
                go.Scatter(x=[names[m] for m in ms], y=[values[m] for m in ms], name=label)
            )
        fig.update_layout(title=title, height=360, margin={"t": 50, "b": 40})
        return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=key))

    days = result.canary_share_by_day
    share = go.Figure()
    share.add_trace(
        go.Bar(
            x=[d["date"] for d in days],
            y=[d["served_canary_share"] for d in days],
            name="share of flights answered by the canary",
        )
    )
    routed = [d for d in days if "routing_share" in d]
    share.add_trace(
        go.Scatter(
            x=[d["date"] for d in routed],
            y=[d["routing_share"] for d in routed],
            name="canary share set at the week's tick",
            line={"shape": "hv"},
        )
    )
    for e in result.events:
        if e["kind"] in ("promote", "rollback") and e["date"][:4].isdigit():
            share.add_vline(x=e["date"], line_dash="dot", line_color="#888")
    share.update_layout(title="Canary share over time", height=360, yaxis={"range": [0, 1]})
    rows = "".join(
        f"<tr><td>{html.escape(e['date'])}</td><td>{html.escape(e['kind'])}</td>"
        f"<td>{html.escape(e['state'])}</td><td>{html.escape(e['message'])}</td></tr>"
        for e in result.events
    )
    table = "".join(
        f"<tr><td>{names[m]}</td><td>{_f(result.static_auc_by_month.get(m))}</td>"
        f"<td>{_f(result.loop_auc_by_month.get(m))}</td>"
        f"<td>{_f(result.static_brier_by_month.get(m))}</td>"
        f"<td>{_f(result.loop_brier_by_month.get(m))}</td>"
        f"<td>{', '.join(f'v{v}' for v in result.champion_by_month.get(m, []))}</td></tr>"
        for m in result.months
    )
    summary = (
        f"<p>{len(result.months)} months, {result.rows_per_month:,} flights per month (seed "
        f"{result.seed}); mean AUC static {_f(result.static_auc_mean)}, looped "
        f"{_f(result.loop_auc_mean)}; mean Brier static {_f(result.static_brier_mean)}, looped "
        f"{_f(result.loop_brier_mean)}; {result.retrains} retrains, {result.promotions} "
        f"promotions, {result.rollbacks} rollbacks; one simulated day = "
        f"{result.sim_day_wall_s:.3f} s; whole replay {result.wall_s:.0f} s.</p>"
    )
    data = json.dumps(
        {
            "static_auc_by_month": result.static_auc_by_month,
            "loop_auc_by_month": result.loop_auc_by_month,
            "static_brier_by_month": result.static_brier_by_month,
            "loop_brier_by_month": result.loop_brier_by_month,
            "events": [{k: e[k] for k in ("date", "kind", "message")} for e in result.events],
        }
    ).replace("</", "<\\/")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>modelloop: the loop on a "
        f"year of flights</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        "<h1>The closed loop on NYC flights 2013</h1>"
        f"{summary}<table><tr><th>month</th><th>AUC static</th><th>AUC looped</th>"
        f"<th>Brier static</th><th>Brier looped</th><th>served by</th></tr>{table}</table>"
        + monthly("Monthly AUC", result.static_auc_by_month, result.loop_auc_by_month, "auc")
        + monthly(
            "Monthly Brier score (lower is better)",
            result.static_brier_by_month,
            result.loop_brier_by_month,
            "brier",
        )
        + str(share.to_html(full_html=False, include_plotlyjs=False, div_id="canary"))
        + "<h2>Loop events</h2><table><tr><th>simulated date</th><th>kind</th><th>state</th>"
        f"<th>message</th></tr>{rows}</table>"
        f"<h2>Policy</h2><pre>{html.escape(result.policy)}</pre>"
        f"<script type='application/json' id='demo-data'>{data}</script></body></html>"
    )


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
