"""The flights example pipeline without tuning, cold and then fully cached; prints one JSON line.

Runs ``examples/flights/modelloop.yaml`` (all of January-February 2013, tuning disabled) in a
fresh home with the embedded store: once cold (every step computed), then again unchanged, both
in this process; then the cached run once more as a new ``modelloop pipeline run`` process (with
interpreter start-up and imports). The example marks its bundled data as cacheable
(``data.cache: true``), so an unchanged rerun is a cache hit for every step.

Usage: python benchmarks/pipeline.py [--sample N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flights" / "modelloop.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="rows sampled (default: all)")
    args = parser.parse_args()

    from modelloop import Client, Settings
    from modelloop.pipeline import Pipeline

    overrides = {"tune.enabled": False, "data.args.sample": args.sample}
    with tempfile.TemporaryDirectory(prefix="modelloop-bench-") as home:
        client = Client(Settings(home=home, user="bench"))
        try:
            t = time.perf_counter()
            cold = Pipeline.from_file(EXAMPLE, overrides).run(client)
            cold_s = time.perf_counter() - t
            t = time.perf_counter()
            cached = Pipeline.from_file(EXAMPLE, overrides).run(client)
            cached_s = time.perf_counter() - t
            rows = int(client.get_run(cold.step("load").run_id).tags["modelloop.rows"])
        finally:
            client.close()
        env = {**os.environ, "MODELLOOP_HOME": home}
        env.pop("MODELLOOP_STORE_URL", None)
        env.pop("MODELLOOP_ARTIFACT_ROOT", None)
        code = "from modelloop.cli._pipeline import pipeline_app; pipeline_app()"
        cmd = [sys.executable, "-c", code]
        sets = ["--set", "tune.enabled=false", "--set", f"data.args.sample={args.sample or 'null'}"]
        t = time.perf_counter()
        proc = subprocess.run(
            [*cmd, "run", str(EXAMPLE), *sets, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        process_s = time.perf_counter() - t
        process_cached = proc.returncode == 0 and all(
            s["cache_hit"] for s in json.loads(proc.stdout)["steps"]
        )
    print(
        json.dumps(
            {
                "cold_s": round(cold_s, 3),
                "cached_s": round(cached_s, 3),
                "cached_process_s": round(process_s, 3),
                "rows": rows,
                "steps": [s.name for s in cold.steps],
                "cold_step_s": {s.name: round(s.seconds, 3) for s in cold.steps},
                "cached_step_s": {s.name: round(s.seconds, 3) for s in cached.steps},
                "all_cached": all(s.cache_hit for s in cached.steps),
                "process_all_cached": process_cached,
                "auc": round(cold.metrics.get("auc", float("nan")), 4),
                "status": cold.status,
            }
        )
    )


if __name__ == "__main__":
    main()
