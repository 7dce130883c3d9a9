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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rows(log: PredictionLog, window, columns=None, **kw) -> pa.Table:  # type: ignore[no-untyped-def]
    batches = list(log.batches(window, columns, **kw))
    return pa.Table.from_batches(batches) if batches else pa.table({c: [] for c in columns})


def test_row_exactly_at_window_start_with_ns_timestamps_is_kept(tmp_path: Path) -> None:
    """Row-group pruning compares exact integers: float rounding (~120 ns) must never drop a row."""
    rng = np.random.default_rng(7)
    starts_us = rng.integers(946_684_800_000_000, 4_102_444_800_000_000, 300)  # 2000 .. 2100
    # row group i holds [start_i - 1 ns, start_i]: the row at the window start is its maximum
    ns = np.stack([starts_us * 1000 - 1, starts_us * 1000], axis=1).ravel()
    table = pa.table(
        {
            "timestamp": pa.array(ns, type=pa.timestamp("ns", tz="UTC")),
            "i": np.repeat(range(300), 2),
        }
    )
    folder = tmp_path / "ns"
    folder.mkdir()
    pq.write_table(table, folder / "a.parquet", row_group_size=2)
    log = PredictionLog(folder)
    for i, us in enumerate(starts_us.tolist()):
        start = _EPOCH + timedelta(microseconds=us)
        got = _rows(log, TimeRange(start, start + timedelta(microseconds=1)), ["timestamp", "i"])
        assert got.column("i").to_pylist() == [i]
        assert got.column("timestamp").cast(pa.int64()).to_pylist() == [us * 1000]


@pytest.mark.parametrize("tz", ["UTC", None])
def test_last_rows_ties_within_one_microsecond(tmp_path: Path, tz: str | None) -> None:
    folder = tmp_path / "ns"
    folder.mkdir()
    base = 1_772_409_600_123_456_000  # 2026-03-02, on a whole microsecond
    offsets = [-5_000, 0, 1, 2, 2, 3, 999]  # all but the first share one microsecond
    ts = pa.array([base + o for o in offsets], type=pa.timestamp("ns", tz=tz))
    pq.write_table(pa.table({"timestamp": ts, "x": list(range(7))}), folder / "a.parquet")
    log = PredictionLog(folder)
    assert _rows(log, LastRows(1), ["x"]).column("x").to_pylist() == [6]
    assert _rows(log, LastRows(2), ["x"]).column("x").to_pylist() == [5, 6]
    assert _rows(log, LastRows(3), ["x"]).column("x").to_pylist() == [3, 5, 6]  # first tie
    assert _rows(log, LastRows(4), ["x"]).column("x").to_pylist() == [3, 4, 5, 6]
    assert _rows(log, LastRows(6), ["x"]).column("x").to_pylist() == [1, 2, 3, 4, 5, 6]


def test_dictionary_column_missing_from_an_older_segment(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    ts = pa.array([1_000, 2_000], type=pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"timestamp": ts, "x": [1.0, 2.0]}), folder / "a.parquet")
    ts2 = pa.array([3_000, 4_000], type=pa.timestamp("ms", tz="UTC"))
    newer = pa.table({"timestamp": ts2, "x": [3.0, 4.0], "carrier": ["AA", "UA"]})
    pq.write_table(newer, folder / "b.parquet")
    got = _rows(
        PredictionLog(folder), TimeRange(), ["x", "carrier"], dictionary_columns=["carrier"]
    )
    assert pa.types.is_dictionary(got.schema.field("carrier").type)
    assert got.column("carrier").to_pylist() == [None, None, "AA", "UA"]
    assert got.column("x").to_pylist() == [1.0, 2.0, 3.0, 4.0]


def _two_segments(tmp_path: Path, old: pa.Table, new: pa.Table) -> PredictionLog:
    folder = tmp_path / "log"
    folder.mkdir()
    pq.write_table(old, folder / "a.parquet")
    pq.write_table(new, folder / "b.parquet")
    return PredictionLog(folder)


def test_segment_with_int_column_then_float(tmp_path: Path) -> None:
    ts = pa.timestamp("ms", tz="UTC")
    log = _two_segments(
        tmp_path,
        pa.table({"timestamp": pa.array([1_000, 2_000], ts), "x": pa.array([1, 2], pa.int64())}),
        pa.table({"timestamp": pa.array([3_000, 4_000], ts), "x": [2.5, 3.5]}),
    )
    got = _rows(log, TimeRange(), ["x"])
    assert got.schema.field("x").type == pa.float64()
    assert got.column("x").to_pylist() == [1.0, 2.0, 2.5, 3.5]
    assert _rows(log, LastRows(3), ["x"]).column("x").to_pylist() == [2.0, 2.5, 3.5]


def test_segment_with_ms_timestamps_then_ns(tmp_path: Path) -> None:
    base = 1_772_409_600_000  # ms
    old = pa.table(
        {"timestamp": pa.array([base, base + 1], pa.timestamp("ms", tz="UTC")), "x": [0, 1]}
    )
    ns = [(base + 1) * 1_000_000 + 1, (base + 1) * 1_000_000 + 2]
    new = pa.table({"timestamp": pa.array(ns, pa.timestamp("ns", tz="UTC")), "x": [2, 3]})
    log = _two_segments(tmp_path, old, new)
    got = _rows(log, TimeRange(), ["timestamp", "x"])
    assert got.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert got.column("timestamp").cast(pa.int64()).to_pylist() == [
        base * 1_000_000,
        (base + 1) * 1_000_000,
        *ns,
    ]
    start = _EPOCH + timedelta(milliseconds=base + 1)
    assert _rows(log, TimeRange(start, None), ["x"]).column("x").to_pylist() == [1, 2, 3]
    assert _rows(log, LastRows(2), ["x"]).column("x").to_pylist() == [2, 3]
    assert _rows(log, LastRows(3), ["x"]).column("x").to_pylist() == [1, 2, 3]


def test_segment_with_pandas_category_then_string(tmp_path: Path) -> None:
    ts = pa.timestamp("ms", tz="UTC")
    old_frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime([1_000, 2_000], unit="ms", utc=True),
            "carrier": pd.Categorical(["AA", "DL"]),
        }
    )
    old = pa.Table.from_pandas(old_frame, preserve_index=False).cast(
        pa.schema([("timestamp", ts), ("carrier", pa.dictionary(pa.int8(), pa.string()))])
    )
    new = pa.table({"timestamp": pa.array([3_000, 4_000], ts), "carrier": ["UA", "AA"]})
    log = _two_segments(tmp_path, old, new)
    plain = _rows(log, TimeRange(), ["carrier"])
    assert plain.schema.field("carrier").type == pa.string()
    assert plain.column("carrier").to_pylist() == ["AA", "DL", "UA", "AA"]
    encoded = _rows(log, "2rows", ["carrier"], dictionary_columns=["carrier"])
    assert pa.types.is_dictionary(encoded.schema.field("carrier").type)
    assert encoded.column("carrier").to_pylist() == ["UA", "AA"]
    assert log.read(TimeRange(), ["carrier"]).carrier.tolist() == ["AA", "DL", "UA", "AA"]
