"""A whole monitoring run of a registered model over a large prediction log with labels; prints
one JSON line.

Registers the flights model (quickstart), writes N logged predictions (sampled flights, scored by
the model) and their labels in segments of 250k rows, then times ``run_monitor`` — drift, data
quality and live accuracy per carrier, both streamed — in a fresh process and reports its peak
RSS (VmHWM of that process).

Usage: python benchmarks/monitor_run.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
from modelloop import Client, Settings
from modelloop.monitoring import run_monitor
client = Client(Settings(home=sys.argv[1], user="bench"))
def hwm():  # this process's peak RSS in MB (VmHWM; ru_maxrss would include the parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
before = hwm()
t = time.perf_counter()
out = run_monitor(client, "flights-delay@champion", window="2h", segment="carrier")
print(json.dumps({
    "run_s": round(time.perf_counter() - t, 2),
    "rows": out.result.window["rows"],
    "labelled": out.result.performance.overall.n,
    "accuracy": round(out.result.performance.overall.metrics["accuracy"], 4),
    "drifted": list(out.result.drift.drifted_columns),
    "rss_before_mb": round(before),
    "peak_rss_mb": round(hwm()),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()

    from modelloop import Client, Settings
    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.demo import replay_frame, run_quickstart

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        client = Client(Settings(home=home, user="bench"))
        run_quickstart(client)
        flights = load_flights(range(3, 13))
        t = time.perf_counter()
        step = 250_000
        for start in range(0, args.rows, step):
            n = min(step, args.rows - start)
            part = flights.sample(n, replace=True, random_state=start)
            replay_frame(
                client,
                "flights-delay@champion",
                part[[*FLIGHTS_FEATURES, "delayed"]],
                label="delayed",
                minutes=60,
            )
        write_s = time.perf_counter() - t
        client.close()
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(home)], capture_output=True, text=True
        )
        if child.returncode != 0:
            sys.exit(child.stderr)
        result = json.loads(child.stdout)
    print(
        json.dumps(
            {
                "benchmark": "monitor_run",
                "log_rows": args.rows,
                "write_s": round(write_s, 1),
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
