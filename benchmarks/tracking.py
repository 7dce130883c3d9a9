"""Tracking throughput on the embedded default (SQLite + local files); prints one JSON line.

(a) runs/s for 200 runs of 5 params + 10 metrics each; (b) individual log_metric calls/s for
10,000 values flushed at the end; (c) values/s for 10,000 values logged in batches of 1,000;
(d) search_runs over 1,000 runs filtered on a metric (median of 20 queries, max_results=100).

Usage: python benchmarks/tracking.py [--store-url URL]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store-url", help="default: a new SQLite file in a temp dir")
    args = parser.parse_args()

    from modelloop import Client, Settings
    from modelloop.store import Metric

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(home=Path(tmp), store_url=args.store_url)
        client = Client(settings)
        client.store.upgrade()
        out: dict[str, object] = {
            "benchmark": "tracking",
            "store": settings.resolved_store_url.split(":")[0],
        }

        # (a) 200 runs x (5 params + 10 metrics)
        t0 = time.perf_counter()
        for i in range(200):
            with client.start_run("bench-a", flush_interval=0) as run:
                run.log_params({f"p{j}": i * j for j in range(5)})
                run.log_metrics({f"m{j}": random.random() for j in range(10)})
        out["a_runs_per_s"] = round(200 / (time.perf_counter() - t0), 1)

        # (b) 10,000 individual log_metric calls, flushed at the end
        with client.start_run("bench-b", flush_every=1_000_000, flush_interval=0) as run:
            t0 = time.perf_counter()
            for step in range(10_000):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
            run.flush()
            out["b_log_metric_calls_per_s"] = round(10_000 / (time.perf_counter() - t0))
        assert client.store.count_metric_values(run.run_id, "loss") == 10_000

        # (c) 10,000 values in batches of 1,000
        with client.start_run("bench-c", flush_interval=0) as run:
            now = int(time.time() * 1000)
            batches = [
                [Metric("loss", random.random(), b * 1000 + k, now) for k in range(1000)]
                for b in range(10)
            ]
            t0 = time.perf_counter()
            for batch in batches:
                run.log_batch(batch)
            out["c_batch_values_per_s"] = round(10_000 / (time.perf_counter() - t0))

        # (d) search_runs over 1,000 runs filtered on a metric
        exp = client.store.create_experiment("bench-d")
        rng = random.Random(0)
        for i in range(1000):
            r = client.store.create_run(exp.experiment_id, name=f"r{i}")
            client.store.log_params(r.run_id, {"max_depth": str(i % 10)})
            client.store.log_metrics(r.run_id, [Metric("auc", rng.random(), 0, now)])
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            page = client.search_runs("bench-d", filter="metrics.auc > 0.8", max_results=100)
            times.append(time.perf_counter() - t0)
        out["d_search_1000_runs_ms"] = round(statistics.median(times) * 1000, 2)
        out["d_matched_page"] = len(page)
        client.close()
    out["python"] = sys.version.split()[0]
    out["machine"] = platform.machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
