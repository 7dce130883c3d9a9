"""Datetime columns are judged by range and recency; near-unique identifiers are left out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import (
    DriftMonitor,
    ReferenceProfile,
    WindowAccumulator,
    check_quality,
    render_html,
    summarize,
)


def _frame(n: int, start: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp(start, tz="UTC")
            + pd.to_timedelta(rng.integers(0, 59 * 86400, n), "s"),
            "request": [f"r-{seed}-{i}" for i in range(n)],
            "row_id": np.arange(seed * 10**6, seed * 10**6 + n),
            "x": rng.normal(size=n),
            "cents": rng.integers(0, 10**9, n),  # near-unique integers, but a measure
            "c": rng.choice(list("abc"), n),
        }
    )


def test_profile_keeps_a_summary_of_datetimes_and_no_identifier_values() -> None:
    ref = _frame(50_000, "2013-01-01")
    prof = ReferenceProfile.from_frame(ref)
    kinds = {n: p.kind for n, p in prof.columns.items()}
    assert kinds == {
        "ts": "datetime",
        "request": "identifier",
        "row_id": "identifier",
        "x": "numeric",
        "cents": "numeric",
        "c": "categorical",
    }
    text = json.dumps(prof.to_dict())
    assert len(text) < 200_000  # the profile is a summary: 50,000 timestamps would not fit
    assert "r-0-17" not in text  # no identifier value is stored
    ts = prof["ts"]
    assert ts.min == ref.ts.min().value and ts.max == ref.ts.max().value
    assert ReferenceProfile.from_dict(json.loads(text)) == prof
    # named explicitly, nothing is detected
    named = ReferenceProfile.from_frame(ref, identifiers=["cents"])
    assert named["cents"].kind == "identifier" and named["request"].kind == "categorical"
    with pytest.raises(InvalidInput, match="datetimes"):
        ReferenceProfile.from_frame(ref, identifiers=["ts"])
    # small samples are all distinct by chance: no identifier below 200 values
    assert ReferenceProfile.from_frame(ref.head(50))["request"].kind == "categorical"


@pytest.mark.parametrize("n", [500, 2_000, 50_000])
def test_window_outside_the_reference_range_is_reported_not_called_no_drift(n) -> None:
    prof = ReferenceProfile.from_frame(_frame(20_000, "2013-01-01"))
    cur = _frame(n, "2013-05-01", seed=1)
    result = DriftMonitor().fit(prof).test(cur)
    ts = result["ts"]
    assert ts.kind == "datetime" and ts.status == "out of range" and ts.verdict == "out of range"
    assert ts.statistic == 1.0 and "100.0% of" in ts.note and "after the reference" in ts.note
    assert "2013-05-0" in ts.note  # the window's range is written out
    assert result.notes["ts"] == ts.note and result.notes["request"].startswith("excluded")
    # not tested columns stay out of the drift share: x, cents and c are the tested ones
    assert result.n_tested == 3 and result.drifted_columns == ()
    assert result["request"].verdict == "excluded" and result["row_id"].status == "excluded"
    quality = check_quality(prof, cur)
    assert quality["ts"].out_of_range_share == 1.0 and "out_of_range" in quality["ts"].issues


def test_window_inside_the_range_and_partly_outside() -> None:
    ref = _frame(20_000, "2013-01-01")
    prof = ReferenceProfile.from_frame(ref)
    inside = (
        DriftMonitor()
        .fit(prof)
        .test(
            _frame(3_000, "2013-01-10", seed=2).assign(ts=lambda d: d.ts.clip(upper=ref.ts.max()))
        )
    )
    assert inside["ts"].status == "in range" and inside["ts"].statistic == 0.0
    partly = DriftMonitor().fit(prof).test(_frame(3_000, "2013-02-01", seed=3))
    assert partly["ts"].status == "partly out of range" and 0 < partly["ts"].statistic < 1


def test_streamed_arrow_batches_equal_one_pass_and_report_renders() -> None:
    prof = ReferenceProfile.from_frame(_frame(20_000, "2013-01-01"))
    cur = _frame(9_000, "2013-02-20", seed=4)
    acc = WindowAccumulator(prof)
    for batch in pa.Table.from_pandas(cur, preserve_index=False).to_batches(2_000):
        acc.update(batch)
    mon = DriftMonitor().fit(prof)
    streamed, whole = mon.test(acc), mon.test(cur)
    assert streamed == whole
    s = acc.summary().columns["ts"]
    ns = cur.ts.dt.as_unit("ns").astype("int64")
    assert s.count == 9_000 and s.after == int((ns > prof["ts"].max).sum()) > 0
    page = render_html(prof, summarize(prof, cur), whole, title="t")
    assert "partly out of range" in page and "excluded: a near-unique identifier" in page
    with pytest.raises(InvalidInput, match="not tested for drift"):
        DriftMonitor(methods={"ts": "ks"}).fit(prof)
