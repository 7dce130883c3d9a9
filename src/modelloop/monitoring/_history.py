"""A model's monitoring history as one self-contained HTML page of charts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    from modelloop.store import MonitoringRecord

__all__ = ["render_history_html"]


def render_history_html(model: str, records: Sequence[MonitoringRecord]) -> str:
    """Drift share and live metrics over time, one point per stored monitoring run; plotly.js is
    inlined from the installed package (no CDN)."""
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots

    if not records:
        raise InvalidInput(f"model {model!r} has no stored monitoring results")
    when = [datetime.fromtimestamp(r.created_at / 1000, UTC) for r in records]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("Share of drifted columns", "Live metrics"),
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
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    fig.update_layout(height=700, title=f"{model}: monitoring history ({len(records)} runs)")
    body = fig.to_html(full_html=False, include_plotlyjs=False)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(model)} monitoring history</title>"
        f"<script>{get_plotlyjs()}</script></head><body>{body}</body></html>"
    )
