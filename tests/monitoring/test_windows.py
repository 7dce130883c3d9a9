"""Windows over Parquet prediction segments written by the test, streamed batch by batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelloop.exceptions import InvalidInput, NotFound, SchemaMismatch
from modelloop.monitoring import (
    CalendarWindow,
    DriftMonitor,
    LastDuration,
    LastRows,
    PredictionLog,
    ReferenceProfile,
    TimeRange,
    parse_window,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
NOW = T0 + timedelta(days=9, hours=12)  # Wednesday of the next week, noon


def _segment(
    rng: np.random.Generator, start: datetime, n: int, step: timedelta, i0: int
) -> pa.Table:
    ts = pd.date_range(start, periods=n, freq=step, tz="UTC").as_unit("ms")
    shift = (ts >= T0 + timedelta(days=7)).astype(float)  # the second week drifts
    return pa.table(
        {
            "request_id": [f"r{i0 + i}" for i in range(n)],
            "timestamp": pa.array(ts, type=pa.timestamp("ms", tz="UTC")),
            "model_name": ["flights"] * n,
            "model_version": np.where(np.arange(n) % 2, "2", "1"),
            "route": ["champion"] * n,
            "x": rng.normal(shift, 1.0),
            "c": rng.choice(["a", "b", "c"], size=n),
            "prediction": rng.integers(0, 2, n),
        }
    )


@pytest.fixture
def log(tmp_path: Path) -> PredictionLog:
    """Ten days, one segment per day, 2,000 rows a day (one per 43.2 s)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "predictions" / "flights"
    folder.mkdir(parents=True)
    for d in range(10):
        seg = _segment(rng, T0 + timedelta(days=d), 2000, timedelta(seconds=43.2), d * 2000)
        pq.write_table(seg, folder / f"seg-{d:03d}.parquet", row_group_size=500)
    return PredictionLog.for_model(tmp_path, "flights")


def _frame(log: PredictionLog, window, **kw) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    batches = list(log.batches(window, now=NOW, batch_size=300, **kw))
    assert all(b.num_rows <= 300 for b in batches)
    return pa.Table.from_batches(batches).to_pandas() if batches else pd.DataFrame()


def test_calendar_day_and_week(log: PredictionLog) -> None:
    today = _frame(log, CalendarWindow("day"))
    assert len(today) == 2000
    assert (today.timestamp.dt.date == NOW.date()).all()
    yesterday = _frame(log, "day-1")
    assert len(yesterday) == 2000 and (yesterday.timestamp.dt.day == NOW.day - 1).all()
    week = _frame(log, CalendarWindow("week"))  # Monday 9th .. Wednesday 11th (data ends)
    assert week.timestamp.min() == pd.Timestamp(T0 + timedelta(days=7))
    assert len(week) == 3 * 2000
    assert len(_frame(log, CalendarWindow("week", -1))) == 7 * 2000


def test_last_duration_and_time_range(log: PredictionLog) -> None:
    end = T0 + timedelta(days=10)  # the log ends just before this instant
    last = pa.Table.from_batches(list(log.batches(LastDuration(timedelta(hours=30)), now=end)))
    ts = last.column("timestamp").to_pandas()
    assert ts.min() >= pd.Timestamp(end - timedelta(hours=30))
    assert last.num_rows == 2000 + 500  # Wednesday whole, and Tuesday from 18:00
    rng = TimeRange(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert len(_frame(log, rng)) == 2000
    assert list(log.batches("30m", now=end + timedelta(hours=1))) == []


def test_last_rows_exact_even_with_ties(tmp_path: Path, log: PredictionLog) -> None:
    newest = _frame(log, LastRows(2500))
    assert len(newest) == 2500
    everything = _frame(log, LastRows(10**9))
    assert len(everything) == 20_000
    assert newest.timestamp.min() == everything.timestamp.sort_values().iloc[-2500]
    # six rows sharing the cut-off timestamp: exactly n rows still come out
    folder = tmp_path / "ties"
    folder.mkdir()
    ts = pa.array(
        [1000, 2000, 2000, 2000, 2000, 2000, 2000, 3000], type=pa.timestamp("ms", tz="UTC")
    )
    pq.write_table(pa.table({"timestamp": ts, "x": list(range(8))}), folder / "a.parquet")
    tie = pa.Table.from_batches(list(PredictionLog(folder).batches(LastRows(4), ["x"]))).to_pandas()
    assert list(tie.columns) == ["x"] and len(tie) == 4 and 7 in set(tie.x)


def test_columns_projection_and_errors(log: PredictionLog, tmp_path: Path) -> None:
    b = next(iter(log.batches("day", ["x", "c"], now=NOW, dictionary_columns=["c"])))
    assert b.schema.names == ["x", "c"] and pa.types.is_dictionary(b.schema.field("c").type)
    with pytest.raises(SchemaMismatch, match="'nope'"):
        list(log.batches("day", ["nope"], now=NOW))
    with pytest.raises(NotFound):
        list(PredictionLog(tmp_path / "absent").batches("day"))
    with pytest.raises(InvalidInput, match="bad window"):
        parse_window("fortnight")
    with pytest.raises(InvalidInput, match="naive"):
        CalendarWindow("day").resolve(datetime(2026, 1, 1))
    assert parse_window("90min") == LastDuration(timedelta(minutes=90))
    assert parse_window("1000rows") == LastRows(1000)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list(PredictionLog(empty).batches("day")) == []


def test_drift_over_streamed_windows(log: PredictionLog) -> None:
    """First week as reference, streamed through the accumulator; the second week drifted."""
    first = log.read(CalendarWindow("week", -1), ["x", "c"], now=NOW)
    monitor = DriftMonitor().fit(ReferenceProfile.from_frame(first))
    steady = monitor.accumulator().update_many(
        log.batches("day-3", ["x", "c"], now=NOW - timedelta(days=2))
    )
    assert steady.n_batches > 1 and monitor.test(steady).drifted_columns == ()
    acc = monitor.accumulator().update_many(
        log.batches("week", ["x", "c"], now=NOW, batch_size=999)
    )
    assert acc.n_rows == 6000 and acc.n_batches >= 6
    assert monitor.test(acc).drifted_columns == ("x",)


def test_segments_with_different_columns_and_naive_timestamps(tmp_path: Path) -> None:
    """An older segment lacks a column added later: its rows read as nulls."""
    folder = tmp_path / "log"
    folder.mkdir()
    ts = pa.array([1_000, 2_000], type=pa.timestamp("ms"))  # naive, read as UTC
    pq.write_table(pa.table({"timestamp": ts, "x": [1.0, 2.0]}), folder / "a.parquet")
    ts2 = pa.array([3_000, 4_000], type=pa.timestamp("ms"))
    newer = pa.table({"timestamp": ts2, "x": [3.0, 4.0], "proba": [0.1, 0.9]})
    pq.write_table(newer, folder / "b.parquet")
    log = PredictionLog(folder)
    got = log.read(TimeRange(datetime.fromtimestamp(1.5, UTC), None), ["x", "proba"])
    assert got.x.tolist() == [2.0, 3.0, 4.0]
    assert got.proba.isna().tolist() == [True, False, False]
    assert log.read(LastRows(1), ["proba"]).proba.tolist() == [0.9]
