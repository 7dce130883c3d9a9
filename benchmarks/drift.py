"""Drift benchmark of issues 4 and 16: prints ONE JSON line.

Speed and memory. Workload: benchmarks/drift_workload.py beside this script (the workload peers
were measured on), imported as-is. Each measurement runs in a fresh subprocess so its peak memory is
its own: the peak resident set (VmHWM) is reset through /proc/self/clear_refs right before the
measured step, so `peak_rss_mb` is the process's resident peak during that step (data, interpreter
and libraries included) and `delta_mb` is that peak minus the resident size just before the step.

Decisions (issue 16):
- `power`: detection rate of a mean shift (in sd) of a normal column against a 100k-row normal
  reference, per window size n, for the rule before issue 16 ("before": KS at alpha 0.05 up to
  2,000 rows, Wasserstein >= 0.1 sd above) and the default rule now ("after": the 95% lower bound
  of the KS distance above 0.02). Shift 0 is the null false-alarm rate. Repetitions per n in
  `power.repeats`.
- `seasonal`: a generated stream (benchmarks/drift_seasonal.py) of hourly windows of 1,000 rows
  whose 10 inputs move with the hour of day; reference: two days pooled; calibration: the next 7
  days (season "hour"); judged: 4 healthy days, then 2 days with x0, x1 shifted and c0 tilted.
  A window is flagged when any column is flagged. Reported: share of healthy windows flagged and
  the delay (windows after the change until the first flag), for the fixed default rule and the
  calibrated mode, over several seeds.
- `flights`: NYC flights 2013, daily windows of March-December against a January-February
  reference (the data `modelloop demo replay` logs, windowed by flight date); calibration on the
  daily windows of January-February (season "weekday"); injected change: from October 1 the
  `distance` column arrives in kilometres instead of miles. Share of March-September windows
  flagged, and the delay after October 1.

    python benchmarks/drift.py            # everything, with the 10M-row Parquet streaming pass
    python benchmarks/drift.py --quick    # no 10M pass, fewer repetitions
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


# -- decisions: power curve, seasonal stream, flights ---------------------------------------------

SHIFTS = (0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2)
SIZES = (500, 1_000, 2_000, 5_000, 10_000, 100_000, 1_000_000)


def _load(name: str) -> ModuleType:
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def power_curve(quick: bool) -> dict[str, object]:
    import numpy as np

    from modelloop.monitoring import (
        KSDetector,
        KSEffectDetector,
        NumericProfile,
        WassersteinDetector,
    )
    from modelloop.monitoring._summary import NumericSummary

    rng = np.random.default_rng(16)
    ref = NumericProfile.from_values(rng.normal(size=100_000), "x")
    ks, wd = KSDetector().fit(ref), WassersteinDetector().fit(ref)
    new = KSEffectDetector().fit(ref)
    before: dict[str, dict[str, float]] = {}
    after: dict[str, dict[str, float]] = {}
    repeats: dict[str, int] = {}
    for n in SIZES:
        reps = 200 if n <= 10_000 else 100 if n <= 100_000 else 20
        reps = max(reps // 4, 10) if quick else reps
        hits_old = dict.fromkeys(SHIFTS, 0)
        hits_new = dict.fromkeys(SHIFTS, 0)
        for _ in range(reps):
            base = np.sort(rng.normal(size=n))
            for shift in SHIFTS:
                summary = NumericSummary.from_values(base + shift, ref)
                old = ks if n <= 2_000 else wd
                hits_old[shift] += old.test(summary).drifted
                hits_new[shift] += new.test(summary).drifted
        before[str(n)] = {str(s): round(h / reps, 3) for s, h in hits_old.items()}
        after[str(n)] = {str(s): round(h / reps, 3) for s, h in hits_new.items()}
        repeats[str(n)] = reps
    return {
        "reference_rows": 100_000,
        "shifts_sd": list(SHIFTS),
        "repeats": repeats,
        "before": before,
        "after": after,
        "null_false_alarm": {
            "before": {n: row["0.0"] for n, row in before.items()},
            "after": {n: row["0.0"] for n, row in after.items()},
        },
    }


def _flag_runs(flags: list[bool], change: int) -> dict[str, object]:
    healthy = flags[:change]
    after = flags[change:]
    delay = after.index(True) if True in after else None
    return {"healthy_flagged": round(sum(healthy) / len(healthy), 4), "delay": delay}


def seasonal(quick: bool) -> dict[str, object]:
    from modelloop.monitoring import DriftMonitor, ReferenceProfile, calibrate

    s = _load("drift_seasonal")
    n, seeds = 1_000, (range(2) if quick else range(5))
    out: dict[str, object] = {"rows_per_window": n, "seeds": len(seeds)}
    for drift in (0.3, 0.15, 0.1):
        fixed, cal_runs = [], []
        for seed in seeds:
            profile = ReferenceProfile.from_frame(s.reference(100 * seed))
            cal = calibrate(
                profile, s.stream(100 * seed + 1, 7 * 24, n, start_hour=48), season="hour"
            )
            monitor = DriftMonitor().fit(profile)
            start = 9 * 24
            test = s.stream(100 * seed + 2, 6 * 24, n, start_hour=start, change=start + 96,
                            drift=drift)  # fmt: skip
            f, c = [], []
            for t, data in test:
                result = monitor.test(data)
                f.append(bool(result.drifted_columns))
                c.append(bool(cal.judge(result, t).flagged_columns))
            fixed.append(_flag_runs(f, 96))
            cal_runs.append(_flag_runs(c, 96))
        out[f"drift_{drift}sd"] = {
            mode: {
                "healthy_flagged": round(
                    sum(float(r["healthy_flagged"]) for r in runs) / len(runs),
                    4,  # type: ignore[arg-type]
                ),
                "delays": [r["delay"] for r in runs],
            }
            for mode, runs in (("fixed", fixed), ("calibrated", cal_runs))
        }
    return out


def flights() -> dict[str, object]:
    from datetime import UTC, datetime

    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.monitoring import DriftMonitor, ReferenceProfile, calibrate

    data = load_flights()
    cols = list(FLIGHTS_FEATURES)
    jan_feb = data[data.month <= 2]
    profile = ReferenceProfile.from_frame(jan_feb[cols])
    days = [(d, part[cols]) for d, part in jan_feb.groupby("date")]
    when = [datetime(d.year, d.month, d.day, tzinfo=UTC) for d, _ in days]
    cal = calibrate(profile, zip(when, (p for _, p in days), strict=True), season="weekday")
    monitor = DriftMonitor().fit(profile)
    later = data[data.month >= 3]
    change = datetime(2013, 10, 1, tzinfo=UTC)
    fixed, calibrated, fixed_cols, cal_cols = [], [], {}, {}
    n_healthy = 0
    for d, part in later.groupby("date"):
        t = datetime(d.year, d.month, d.day, tzinfo=UTC)
        window = part[cols].copy()
        if t >= change:  # a unit bug upstream: kilometres instead of miles
            window["distance"] = window["distance"] * 1.609344
        else:
            n_healthy += 1
        result = monitor.test(window)
        judged = cal.judge(result, t)
        fixed.append(bool(result.drifted_columns))
        calibrated.append(bool(judged.flagged_columns))
        if t < change:
            for c in result.drifted_columns:
                fixed_cols[c] = fixed_cols.get(c, 0) + 1
            for c in judged.flagged_columns:
                cal_cols[c] = cal_cols.get(c, 0) + 1
    return {
        "windows": "daily",
        "calibration_windows": cal.n_windows,
        "healthy_windows": n_healthy,
        "fixed": {**_flag_runs(fixed, n_healthy), "healthy_flags_by_column": fixed_cols},
        "calibrated": {**_flag_runs(calibrated, n_healthy), "healthy_flags_by_column": cal_cols},
    }


def _run_child(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="skip the 10M-row Parquet pass; fewer repetitions"
    )
    ap.add_argument("--only", choices=["speed", "decisions"], help=argparse.SUPPRESS)
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
    if args.only != "decisions":
        for n, label in ((100_000, "100k"), (1_000_000, "1M")):
            report[label] = _run_child("size", str(n))
    if args.only != "speed":
        t0 = time.perf_counter()
        report["power"] = power_curve(args.quick)
        report["seasonal"] = seasonal(args.quick)
        report["flights"] = flights()
        report["decisions_s"] = round(time.perf_counter() - t0, 1)
    if not args.quick and args.only is None:
        with tempfile.TemporaryDirectory(prefix="modelloop-bench-") as tmp:
            written = _run_child("write", tmp, str(10_000_000), str(1_000_000))
            report["10M_parquet"] = {**written, **_run_child("stream", tmp)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
