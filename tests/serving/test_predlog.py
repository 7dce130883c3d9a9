"""PredictionLog: every appended row reaches a segment monitoring can read, whatever happens."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelloop.exceptions import InvalidInput
from modelloop.monitoring import PredictionLog as MonitoredLog
from modelloop.serving._metrics import ServingMetrics
from modelloop.serving._predlog import PredictionLog

MODEL = "fraud"
N_INPUTS = 30  # about the breast-cancer signature


def entry(ids: list[str], *, version: int = 3, inputs: int = N_INPUTS) -> dict[str, Any]:
    """The columns the server appends for one request of len(ids) rows."""
    n = len(ids)
    cols: dict[str, Any] = {
        "request_id": ids,
        "timestamp": [time.time()] * n,
        "model_name": [MODEL] * n,
        "model_version": [version] * n,
        "route": ["champion"] * n,
    }
    for j in range(inputs):
        cols[f"x{j}"] = [float(j)] * n
    cols["prediction"] = [1] * n
    cols["proba_0"] = [0.25] * n
    cols["proba_1"] = [0.75] * n
    cols["latency_ms"] = [1.5] * n
    return cols


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def segments(home: Path, model: str = MODEL) -> list[Path]:
    return sorted((home / "predictions" / model).glob("*.parquet"))


def read_all(home: Path, model: str = MODEL) -> pa.Table:
    return pa.concat_tables(
        [pq.read_table(p) for p in segments(home, model)], promote_options="permissive"
    )


def metric(metrics: ServingMetrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render()[0].decode()):
        for s in family.samples:
            if s.name == name:
                return s.value
    raise KeyError(name)


def test_size_triggered_flush_then_close_writes_the_rest(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_rows=100, max_delay_s=60.0)
    log.start()
    ids = [f"r{i}" for i in range(250)]
    for rid in ids:
        log.append(MODEL, entry([rid]))
    wait_for(lambda: log.rows_written == 200)  # long before the 60 s delay
    assert log.pending_rows == 50
    assert len(segments(tmp_path)) == 2
    log.close()
    assert (log.rows_written, log.pending_rows, log.rows_dropped) == (250, 0, 0)
    files = segments(tmp_path)
    assert [pq.read_metadata(p).num_rows for p in files] == [100, 100, 50]
    assert read_all(tmp_path).column("request_id").to_pylist() == ids


def test_time_triggered_flush(tmp_path: Path) -> None:
    metrics = ServingMetrics()
    log = PredictionLog(tmp_path, max_rows=10_000, max_delay_s=0.2, metrics=metrics)
    log.start()
    t0 = time.monotonic()
    log.append(MODEL, entry(["a", "b", "c"]))
    time.sleep(0.05)
    assert log.rows_written == 0 and log.pending_rows == 3
    assert log.lag_seconds >= 0.05
    wait_for(lambda: log.rows_written == 3)
    assert 0.2 <= time.monotonic() - t0 < 5
    assert log.lag_seconds == 0.0 and log.pending_rows == 0
    log.append(MODEL, entry(["d"]))  # a second cycle after an idle wait
    wait_for(lambda: log.rows_written == 4)
    log.close()
    assert len(segments(tmp_path)) == 2
    assert metric(metrics, "modelloop_serving_prediction_log_rows_total") == 4
    assert metric(metrics, "modelloop_serving_prediction_log_pending_rows") == 0


def test_close_without_thread_writes_everything(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(MODEL, entry(["a", "b"]))
    log.append(MODEL, entry(["c"]))
    log.close()
    assert log.rows_written == 3
    assert read_all(tmp_path).column("request_id").to_pylist() == ["a", "b", "c"]


def test_segments_have_monitoring_layout_and_types(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    cols = entry(["a", "b"])
    cols["timestamp"] = [1_700_000_000.123, 1_700_000_001.5]
    cols["prediction"] = np.array([0, 1])  # numpy arrays are fine too
    log.append(MODEL, cols)
    log.close()
    (path,) = segments(tmp_path)
    schema = pq.read_schema(path)
    # pandas 3 strings arrive as large_string; monitoring reads either
    assert pa.types.is_string(schema.field("request_id").type) or pa.types.is_large_string(
        schema.field("request_id").type
    )
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("model_version").type == pa.int64()
    assert schema.field("model_name").type == schema.field("request_id").type
    assert schema.field("route").type == schema.field("request_id").type
    assert schema.names[:5] == ["request_id", "timestamp", "model_name", "model_version", "route"]
    assert {"x0", "x29", "prediction", "proba_0", "proba_1", "latency_ms"} <= set(schema.names)
    table = pq.read_table(path)
    stamps = [t.timestamp() for t in table.column("timestamp").to_pylist()]
    assert stamps == pytest.approx([1_700_000_000.123, 1_700_000_001.5], abs=1e-3)
    assert table.column("prediction").to_pylist() == [0, 1]
    # monitoring's own reader streams the rows back
    reader = MonitoredLog.for_model(tmp_path, MODEL)
    batches = list(reader.batches("1000000rows", ["request_id", "x0", "prediction"]))
    assert sum(b.num_rows for b in batches) == 2


def test_scalars_broadcast_and_missing_timestamp_and_model_name_filled(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    before = time.time()
    log.append(MODEL, {"request_id": ["a", "b"], "model_version": 2, "route": "shadow",
                       "x0": [1.0, 2.0], "prediction": [0, 1]})  # fmt: skip
    log.close()
    table = read_all(tmp_path)
    assert table.column("route").to_pylist() == ["shadow", "shadow"]
    assert table.column("model_version").to_pylist() == [2, 2]
    assert table.column("model_name").to_pylist() == [MODEL, MODEL]
    stamps = [t.timestamp() for t in table.column("timestamp").to_pylist()]
    assert all(before - 1 <= s <= time.time() + 1 for s in stamps)


def test_different_column_sets_and_models_go_to_separate_segments(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(MODEL, entry(["a"], version=3, inputs=2))
    log.append(MODEL, entry(["b"], version=4, inputs=3))  # the new version has a third input
    log.append(MODEL, entry(["c"], version=3, inputs=2))
    log.append("churn", entry(["d"], version=1, inputs=1))
    log.close()
    tables = [pq.read_table(p) for p in segments(tmp_path)]
    by_ids = {tuple(t.column("request_id").to_pylist()): t for t in tables}
    assert set(by_ids) == {("a", "c"), ("b",)}
    assert "x2" not in by_ids[("a", "c")].column_names
    assert by_ids[("b",)].column("x2").to_pylist() == [2.0]
    assert read_all(tmp_path, "churn").column("request_id").to_pylist() == ["d"]
    rows = MonitoredLog.for_model(tmp_path, MODEL).batches("1000000rows", ["request_id", "x2"])
    assert sorted(r for b in rows for r in b.column(0).to_pylist()) == ["a", "b", "c"]


def test_write_failure_is_counted_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "predictions" / MODEL
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")  # the model's folder cannot be created
    metrics = ServingMetrics()
    log = PredictionLog(tmp_path, max_rows=5, max_delay_s=0.1, metrics=metrics)
    caplog.set_level(logging.WARNING, logger="modelloop.serving._predlog")
    log.start()
    ids = [f"r{i}" for i in range(12)]
    for rid in ids:
        log.append(MODEL, entry([rid]))  # never raises
    wait_for(lambda: log.write_errors >= 3)
    assert log.rows_written == 0 and log.rows_dropped == 0 and log.pending_rows == 12
    assert metric(metrics, "modelloop_serving_prediction_log_errors_total") >= 3
    assert metric(metrics, "modelloop_serving_prediction_log_pending_rows") == 12
    assert metric(metrics, "modelloop_serving_prediction_log_lag_seconds") > 0
    failures = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(failures) == 1  # once per burst, not once per attempt
    blocker.unlink()  # the problem is fixed
    wait_for(lambda: log.rows_written == 12)
    log.close()
    assert read_all(tmp_path).column("request_id").to_pylist() == ids
    assert log.pending_rows == 0
    assert metric(metrics, "modelloop_serving_prediction_log_rows_total") == 12
    assert any("writing again" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_then_writable(tmp_path: Path) -> None:
    folder = tmp_path / "predictions" / MODEL
    folder.mkdir(parents=True)
    folder.chmod(0o500)
    log = PredictionLog(tmp_path, max_delay_s=0.1)
    try:
        log.start()
        log.append(MODEL, entry(["a"]))
        wait_for(lambda: log.write_errors >= 1)
        assert log.rows_written == 0
    finally:
        folder.chmod(0o700)
    wait_for(lambda: log.rows_written == 1)
    log.close()


def test_home_that_is_a_file_fails_then_recovers_on_flush(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    log = PredictionLog(home)
    log.append(MODEL, entry(["a", "b"]))
    log.flush()
    assert (log.write_errors, log.rows_written, log.pending_rows) == (1, 0, 2)
    home.unlink()
    log.append(MODEL, entry(["c"]))
    log.flush()
    assert (log.rows_written, log.pending_rows) == (3, 0)
    assert read_all(home).column("request_id").to_pylist() == ["a", "b", "c"]


def test_close_counts_unwritable_rows_as_dropped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    metrics = ServingMetrics()
    log = PredictionLog(home, metrics=metrics)
    log.append(MODEL, entry(["a", "b"]))
    log.close(timeout_s=1)
    assert (log.rows_written, log.rows_dropped, log.pending_rows) == (0, 2, 0)
    assert metric(metrics, "modelloop_serving_prediction_log_dropped_rows_total") == 2
    log.append(MODEL, entry(["c"]))  # after close: dropped and counted, not raised
    assert log.rows_dropped == 3


def test_over_max_pending_rows_is_dropped_and_counted(tmp_path: Path) -> None:
    metrics = ServingMetrics()
    log = PredictionLog(tmp_path, max_rows=10, max_pending_rows=20, metrics=metrics)
    log.append(MODEL, entry([f"a{i}" for i in range(15)]))
    log.append(MODEL, entry([f"b{i}" for i in range(10)]))  # 25 > 20: dropped whole
    log.append(MODEL, entry([f"c{i}" for i in range(5)]))  # exactly 20: kept
    assert (log.pending_rows, log.rows_dropped) == (20, 10)
    assert metric(metrics, "modelloop_serving_prediction_log_dropped_rows_total") == 10
    log.flush()
    assert log.rows_written == 20
    ids = read_all(tmp_path).column("request_id").to_pylist()
    assert ids == [f"a{i}" for i in range(15)] + [f"c{i}" for i in range(5)]
    log.append(MODEL, entry(["d"]))  # room again once written
    log.close()
    assert (log.rows_written, log.rows_dropped) == (21, 10)


def test_over_max_pending_bytes_is_dropped_and_counted_while_the_log_cannot_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    home.write_text("a file where the log's folder should be")
    metrics = ServingMetrics()
    bound = 1_000_000
    log = PredictionLog(home, max_rows=10, max_pending_bytes=bound, metrics=metrics)
    big = "x" * 100_000
    names = (
        "request_id",
        "timestamp",
        "model_name",
        "model_version",
        "route",
        "text",
        "prediction",
    )
    with caplog.at_level(logging.WARNING, logger="modelloop.serving._predlog"):
        for i in range(30):  # 3 MB of text against a bound of 1 MB
            row = (f"r{i}", time.time(), MODEL, 1, "champion", big, 1)
            log.append_row(MODEL, names, row)
            if i % 5 == 0:
                log.flush()  # fails: kept for retry, still pending
        log.append(MODEL, {**entry([f"m{i}" for i in range(3)]), "text": [big] * 3})
    assert 0 < log.pending_bytes <= bound
    assert log.pending_rows == 9 and log.rows_dropped == 30 + 3 - 9
    assert log.write_errors >= 1
    assert metric(metrics, "modelloop_serving_prediction_log_dropped_rows_total") == 24
    assert metric(metrics, "modelloop_serving_prediction_log_max_pending_bytes") == bound
    assert 0 < metric(metrics, "modelloop_serving_prediction_log_pending_bytes") <= bound
    warnings = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(warnings) == 1 and "bytes" in warnings[0], warnings  # once per burst
    home.unlink()  # writable again: what was kept is written, the bytes are given back
    log.flush()
    assert (log.rows_written, log.pending_rows, log.pending_bytes) == (9, 0, 0)


def test_malformed_rows_are_dropped_without_blocking_good_ones(tmp_path: Path) -> None:
    metrics = ServingMetrics()
    log = PredictionLog(tmp_path, metrics=metrics)
    good = [f"g{i}" for i in range(6)]
    for i, rid in enumerate(good):
        log.append(MODEL, entry([rid]))
        if i == 3:
            bad = entry(["bad"])
            bad["x0"] = [1.0, 2.0]  # two values for one row
            log.append(MODEL, bad)
    log.append("../escape", entry(["evil"]))  # not a valid model name
    log.append(MODEL, {"x0": 1.0})  # no request_id, route, prediction
    log.append(MODEL, None)  # type: ignore[arg-type]  # garbage: no exception, counted as lost
    log.flush()
    assert log.rows_written == 6
    assert log.rows_dropped == 4 and log.pending_rows == 0
    assert sorted(read_all(tmp_path).column("request_id").to_pylist()) == good
    assert not (tmp_path / "escape").exists() and not (tmp_path / "predictions" / "..").is_file()
    assert metric(metrics, "modelloop_serving_prediction_log_dropped_rows_total") == 4
    log.flush()  # bad rows are not retried
    assert log.rows_written == 6 and log.pending_rows == 0


def test_concurrent_appends_while_flushing_lose_nothing(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_rows=500, max_delay_s=0.05)
    log.start()

    def worker(k: int) -> None:
        for i in range(1_000):
            log.append(MODEL, entry([f"{k}-{i}"]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    ids = read_all(tmp_path).column("request_id").to_pylist()
    assert log.rows_written == len(ids) == 4_000
    assert set(ids) == {f"{k}-{i}" for k in range(4) for i in range(1_000)}
    assert all(pq.read_metadata(p).num_rows <= 500 for p in segments(tmp_path))


def test_append_is_cheap(tmp_path: Path) -> None:
    rounds = []
    for _ in range(5):
        log = PredictionLog(tmp_path)
        entries = [entry([f"r{i}"]) for i in range(2_000)]
        t0 = time.perf_counter()
        for cols in entries:
            log.append(MODEL, cols)
        rounds.append((time.perf_counter() - t0) / len(entries) * 1e6)
        assert log.pending_rows == 2_000 and log.rows_written == 0  # no I/O on this path
    best, median = min(rounds), sorted(rounds)[2]
    width = len(entries[0])
    print(f"\nPredictionLog.append, 1-row entry of {width} columns: best {best:.2f} us, "
          f"median {median:.2f} us per call")  # fmt: skip
    assert best < 50  # typically a few us; generous for a loaded 2-core machine


@pytest.mark.parametrize(
    "kwargs",
    [{"max_rows": 0}, {"max_delay_s": 0}, {"max_rows": 100, "max_pending_rows": 10}],
)
def test_bad_settings_are_rejected(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        PredictionLog(tmp_path, **kwargs)


def test_rows_given_as_tuples_are_written_like_entries(tmp_path: Path) -> None:
    cols = entry(["dict-0", "dict-1"])
    names = tuple(cols)
    log = PredictionLog(tmp_path, max_rows=1000, max_delay_s=60)
    for i in range(50):
        log.append_row(
            MODEL, names, tuple(f"row-{i}" if n == "request_id" else cols[n][0] for n in names)
        )
    log.append(MODEL, cols)  # the same columns as a dict entry
    log.append_row(MODEL, names, ("short",))  # malformed: refused, never raised
    reordered = (names[1], names[0], *names[2:])
    row = tuple(cols[n][0] for n in reordered)
    log.append_row(MODEL, reordered, (row[0], "reordered", *row[2:]))
    log.close()

    table = read_all(tmp_path)
    ids = table.column("request_id").to_pylist()
    assert sorted(ids) == sorted(
        [f"row-{i}" for i in range(50)] + ["dict-0", "dict-1", "reordered"]
    )
    assert len(segments(tmp_path)) == 1  # one column set: one segment
    assert table.column_names[:5] == [
        "request_id",
        "timestamp",
        "model_name",
        "model_version",
        "route",
    ]
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert set(table.column("x7").to_pylist()) == {7.0}
    assert set(table.column("proba_1").to_pylist()) == {0.75}
    assert log.rows_written == 53


def test_a_segment_of_rows_and_entries_keeps_the_given_column_order(tmp_path: Path) -> None:
    import datetime as dt

    cols = entry(["dict-0"])
    names = tuple(cols)
    log = PredictionLog(tmp_path, max_rows=1000, max_delay_s=60)
    log.append_row(MODEL, names, tuple(cols[n][0] for n in names))
    log.append(MODEL, cols)
    log.close()
    assert read_all(tmp_path).column_names == list(names)

    other = tmp_path / "datetimes"  # datetime timestamps with microseconds are truncated to ms
    log = PredictionLog(other, max_rows=1000, max_delay_s=60)
    stamp = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    log.append(MODEL, {**entry(["t-0"]), "timestamp": [stamp]})
    log.close()
    assert log.rows_written == 1
    assert read_all(other).column("timestamp").to_pylist() == [stamp.replace(microsecond=123000)]
