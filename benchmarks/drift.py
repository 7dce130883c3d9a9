"""Drift benchmark of issue 4: prints ONE JSON line.

Workload: benchmarks/drift_workload.py beside this script (the workload peers were measured on),
imported as-is. Each measurement runs in a fresh subprocess so its peak memory is its own:
the peak resident set (VmHWM) is reset through /proc/self/clear_refs right before the measured
step, so `peak_rss_mb` is the process's resident peak during that step (data, interpreter and
libraries included) and `delta_mb` is that peak minus the resident size just before the step.

    python benchmarks/drift.py            # 100k, 1M and the 10M-row Parquet streaming pass
    python benchmarks/drift.py --quick    # 100k and 1M only
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import ModuleType

REPEATS = 5
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def load_workload() -> ModuleType:
    path = Path(__file__).resolve().parent / "drift_workload.py"
    spec = importlib.util.spec_from_file_location("drift_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _memory(before_kb: int, resettable: bool) -> dict[str, float]:
    if resettable:
        peak_kb = _status_kb("VmHWM")
    else:  # lifetime peak: an upper bound
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rss_before_mb": round(before_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "delta_mb": round((peak_kb - before_kb) / 1024, 1),
    }


def child_size(n: int) -> dict[str, object]:
    from modelloop.monitoring import DriftMonitor, ReferenceProfile

    w = load_workload()
    reference, current = w.make_frames(n)
    builds = []
    for _ in range(3):
        t0 = time.perf_counter()
        profile = ReferenceProfile.from_frame(reference)
        builds.append(time.perf_counter() - t0)
    profile_bytes = len(json.dumps(profile.to_dict()))
    del reference
    monitor = DriftMonitor().fit(profile)
    monitor.test(current)  # warm-up: lazy imports of scipy and pyarrow.compute
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        result = monitor.test(current)
        runs.append(time.perf_counter() - t0)
    resettable = _reset_peak()
    before = _status_kb("VmRSS")
    tracemalloc.start()  # numpy reports its buffers to tracemalloc; pyarrow's pool does not
    result = monitor.test(current)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    mem = {**_memory(before, resettable), "traced_peak_mb": round(traced / 2**20, 1)}
    return {
        "profile_build_s": round(statistics.median(builds), 4),
        "profile_json_kb": round(profile_bytes / 1024, 1),
        "drift_run_s": round(statistics.median(runs), 4),
        "flagged": sorted(result.drifted_columns),
        "exact": set(result.drifted_columns) == w.DRIFTED,
        "methods": sorted({c.method for c in result.columns}),
        **mem,
    }


def child_write(folder: str, rows: int, chunk: int) -> dict[str, object]:
    """Write `rows` rows of the workload's current-window schema to Parquet, chunk by chunk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelloop.monitoring import ReferenceProfile

    w = load_workload()
    reference, _ = w.make_frames(1_000_000)
    profile = ReferenceProfile.from_frame(reference)
    Path(folder, "profile.json").write_text(json.dumps(profile.to_dict()))
    del reference
    levels = pa.array(list(w.LEVELS))
    path = Path(folder, "current.parquet")
    t0 = time.perf_counter()
    writer = None
    for k in range(rows // chunk):
        rng = np.random.default_rng(w.SEED + 1 + k)  # same distributions, new draws per chunk
        cols: dict[str, pa.Array] = {}
        for i, c in enumerate(w.NUM):
            cols[c] = pa.array(rng.normal(0.5 if i < 3 else 0.0, 1.0, chunk))
        for j, c in enumerate(w.CAT):
            p = w.P[::-1] if j == 0 else w.P
            codes = np.searchsorted(np.cumsum(p), rng.random(chunk), side="right")
            codes = np.minimum(codes, len(p) - 1).astype(np.int32)
            cols[c] = pa.DictionaryArray.from_arrays(pa.array(codes), levels)
        # one prediction every 5 ms from 2026-01-01 00:00 UTC: 10M rows fit in that UTC day
        start_ms = T0_MS + k * chunk * 5
        ts = np.arange(start_ms, start_ms + chunk * 5, 5, dtype=np.int64)
        cols["timestamp"] = pa.array(ts, type=pa.timestamp("ms", tz="UTC"))
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=chunk // 4)
    assert writer is not None
    writer.close()
    return {
        "write_s": round(time.perf_counter() - t0, 2),
        "file_mb": round(path.stat().st_size / 2**20),
    }


def child_stream(folder: str) -> dict[str, object]:
    from datetime import UTC, datetime

    from modelloop.monitoring import CalendarWindow, DriftMonitor, PredictionLog, ReferenceProfile

    w = load_workload()
    profile = ReferenceProfile.from_dict(json.loads(Path(folder, "profile.json").read_text()))
    monitor = DriftMonitor().fit(profile)
    log = PredictionLog(folder)
    noon = datetime(2026, 1, 1, 12, tzinfo=UTC)
    resettable = _reset_peak()
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    acc = monitor.accumulator()
    batches = log.batches(
        CalendarWindow("day"),
        columns=list(profile.columns),
        now=noon,
        batch_size=65_536,
        dictionary_columns=w.CAT,
    )
    for batch in batches:
        acc.update(batch)
    result = monitor.test(acc)
    elapsed = time.perf_counter() - t0
    return {
        "rows": acc.n_rows,
        "batches": acc.n_batches,
        "stream_s": round(elapsed, 2),
        "flagged": sorted(result.drifted_columns),
        "exact": set(result.drifted_columns) == w.DRIFTED,
        **_memory(before, resettable),
    }


def _run_child(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 10M-row Parquet pass")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "size":
            out = child_size(int(rest[0]))
        elif kind == "write":
            out = child_write(rest[0], int(rest[1]), int(rest[2]))
        else:
            out = child_stream(rest[0])
        print(json.dumps(out))
        return
    report: dict[str, object] = {"benchmark": "drift", "columns": 25, "cpus": os.cpu_count()}
    for n, label in ((100_000, "100k"), (1_000_000, "1M")):
        report[label] = _run_child("size", str(n))
    if not args.quick:
        with tempfile.TemporaryDirectory(prefix="modelloop-bench-") as tmp:
            written = _run_child("write", tmp, str(10_000_000), str(1_000_000))
            report["10M_parquet"] = {**written, **_run_child("stream", tmp)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
