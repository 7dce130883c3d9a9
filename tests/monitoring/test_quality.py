"""Data-quality checks computed from the same one-pass summary as drift."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modelloop.monitoring import QualityReport, ReferenceProfile, WindowAccumulator, check_quality
from modelloop.monitoring._windows import _ns, _overlaps_ns


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 10_000
    ref = pd.DataFrame(
        {
            "x": rng.uniform(0, 10, n),
            "y": rng.normal(0, 1, n),
            "c": rng.choice(["a", "b"], n),
            "d": rng.choice(["u", "v"], n),
        }
    )
    cur = ref.sample(frac=1.0, random_state=1).reset_index(drop=True)
    cur.loc[:499, "x"] = 12.0  # 5% above the reference maximum
    cur.loc[:1999, "y"] = np.nan  # missing rate 0 -> 20%
    cur.loc[:299, "c"] = "z"  # 3% unseen category
    cur.loc[300:309, "c"] = "w"
    return ref, cur


def test_quality_breaches_are_found_and_named() -> None:
    ref, cur = _frames()
    report = check_quality(ReferenceProfile.from_frame(ref), cur)
    assert set(report.breaches) == {
        ("x", "out_of_range"),
        ("y", "missing_rate_jump"),
        ("c", "unseen_categories"),
    }
    assert report["x"].out_of_range_share == 0.05
    assert report["y"].missing_rate_current == 0.2 and report["y"].missing_rate_reference == 0
    assert report["c"].unseen_share == 0.031 and report["c"].unseen_categories == ("z", "w")
    assert report["d"].issues == () and not report.ok
    back = QualityReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back == report


def test_quality_of_clean_window_and_thresholds() -> None:
    ref, cur = _frames()
    prof = ReferenceProfile.from_frame(ref)
    assert check_quality(prof, ref.sample(frac=0.5, random_state=2)).ok
    lenient = check_quality(prof, cur, out_of_range=0.1, missing_jump=0.5, unseen=0.05)
    assert lenient.ok


def test_quality_from_streaming_accumulator_equals_one_pass() -> None:
    ref, cur = _frames()
    prof = ReferenceProfile.from_frame(ref)
    acc = WindowAccumulator(prof)
    for b in pa.Table.from_pandas(cur, preserve_index=False).to_batches(max_chunksize=1_500):
        acc.update(b)
    assert check_quality(prof, acc) == check_quality(prof, cur)


def test_row_group_pruning_uses_timestamp_statistics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from modelloop.monitoring import TimeRange

    ts = pa.array(np.arange(4000, dtype=np.int64) * 1000, type=pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"timestamp": ts}), tmp_path / "a.parquet", row_group_size=1000)
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    rng = TimeRange(datetime.fromtimestamp(1500, UTC), datetime.fromtimestamp(2100, UTC))
    lo, hi = _ns(rng.start), _ns(rng.end)
    kept = [g for g in range(4) if _overlaps_ns(meta.row_group(g), 0, ts.type.unit, lo, hi)]
    assert kept == [1, 2]
