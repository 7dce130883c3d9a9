"""A one-hour monitoring window over 30 days of prediction log on S3 (moto's server on
loopback); prints one JSON line with ``s3_window_1h_s``.

Writes ``--days`` of log for one model through ``MODELLOOP_LOG_ROOT=s3://...`` (the layout
partitioned by date and hour, one segment per hour), then times, in this process, a one-hour
window read as monitoring reads it: listing the partitions of the window, opening its segments
and streaming its rows. ``s3_window`` is the function ``benchmarks/scale.py`` calls.

``--window-segments K`` writes the window's hour as K segments instead of one, as replicas that
flush every 2 s make them (two replicas: 3,600 an hour), so the cost of a window can be split
into a part per object (a listing entry and a GET) and a part per row. ``s3_log_bytes`` is the
size of every object written, from the bucket's listing.

Usage: python benchmarks/s3_window.py [--days 30] [--rows-per-hour 2000] [--window-segments 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BUCKET = "modelloop-bench-logs"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def _month(days: int, rows_per_hour: int) -> Any:
    import numpy as np
    import pandas as pd

    n = days * 24 * rows_per_hour
    rng = np.random.default_rng(0)
    start = pd.Timestamp("2026-11-03", tz="UTC")
    offsets = np.arange(n) * (3_600_000 // rows_per_hour)  # ms, evenly through each hour
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "timestamp": start + pd.to_timedelta(offsets, unit="ms"),
            "model_name": "flights",
            "model_version": 1,
            "route": "champion",
            "distance": rng.normal(800, 200, n),
            "dep_hour": rng.integers(0, 24, n),
            "carrier": rng.choice(["AA", "DL", "UA", "WN"], n),
            "prediction": rng.integers(0, 2, n),
            "proba_1": rng.random(n),
        }
    )


def s3_window(
    days: int = 30, rows_per_hour: int = 2_000, repeats: int = 3, window_segments: int = 1
) -> dict[str, Any]:
    """Write ``days`` of log to a fresh moto server and time a one-hour window over it (best
    of ``repeats``); the window's hour is written as ``window_segments`` segments. The figures
    as a dict."""
    if days < 1 or rows_per_hour < 1 or not 1 <= window_segments <= rows_per_hour:
        raise ValueError("days and rows_per_hour must be >= 1, window_segments in 1..rows_per_hour")
    from datetime import timedelta

    port = _free_port()
    proc = _moto(port)
    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL", "MODELLOOP_LOG_ROOT"]}
    try:
        os.environ.update(AWS_ENV)
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        os.environ["MODELLOOP_LOG_ROOT"] = f"s3://{BUCKET}/logs"
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        s3.create_bucket(Bucket=BUCKET)
        from modelloop._logroot import close_sinks
        from modelloop.monitoring import PredictionLog, append_predictions
        from modelloop.monitoring._windows import TimeRange

        frame = _month(days, rows_per_hour)
        with tempfile.TemporaryDirectory(prefix="modelloop-bench-s3-") as tmp:
            home = Path(tmp)
            start = frame["timestamp"].iloc[0].to_pydatetime() + timedelta(days=days // 2)
            window = TimeRange(start, start + timedelta(hours=1))
            inside = (frame["timestamp"] >= start) & (
                frame["timestamp"] < start + timedelta(hours=1)
            )
            t = time.perf_counter()
            append_predictions(home, "flights", frame[~inside])
            hour = frame[inside].reset_index(drop=True)
            step = -(-len(hour) // window_segments)
            for i in range(0, len(hour), step):
                append_predictions(home, "flights", hour.iloc[i : i + step])
            close_sinks()
            write_s = time.perf_counter() - t
            objects = log_bytes = 0
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                for item in page.get("Contents", []):
                    objects += 1
                    log_bytes += int(item["Size"])
            columns = ["distance", "dep_hour", "carrier", "prediction", "route"]
            best = float("inf")
            rows = files = 0
            for _ in range(repeats):
                t = time.perf_counter()
                log = PredictionLog.for_model(home, "flights").within(window)
                rows = sum(b.num_rows for b in log.batches(window, columns))
                best = min(best, time.perf_counter() - t)
                files = len(log.files())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "s3_window_1h_s": round(best, 3),
        "s3_window_rows": rows,
        "s3_window_files": files,
        "s3_log_days": days,
        "s3_log_rows": len(frame),
        "s3_log_objects": objects,
        "s3_log_bytes": log_bytes,
        "s3_log_bytes_per_row": round(log_bytes / len(frame), 1),
        "s3_log_write_s": round(write_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-hour", type=int, default=2_000)
    parser.add_argument("--window-segments", type=int, default=1)
    args = parser.parse_args()
    figures = s3_window(args.days, args.rows_per_hour, window_segments=args.window_segments)
    print(json.dumps({"benchmark": "s3_window", **figures}))


if __name__ == "__main__":
    main()
