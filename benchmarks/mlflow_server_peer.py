"""MLflow's tracking server on the workload of ``benchmarks/server.py``; prints one JSON line.

Run with an interpreter that has MLflow (kept out of modelloop's own environment), e.g.
``python benchmarks/server.py --mlflow-python /path/to/mlflow-venv/bin/python``, which calls
this script. A real ``mlflow server`` process over a new SQLite file; the client in this process
talks HTTP to it: 200 runs of 5 params and 10 metrics each (``mlflow.log_params`` and
``mlflow.log_metrics``, one batch each, as modelloop's client sends them), then 100,000 metric
values in batches of 1,000 (``MlflowClient.log_batch``'s limit).

Usage: python benchmarks/mlflow_server_peer.py [--runs 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--values", type=int, default=100_000)
    args = parser.parse_args()

    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    out: dict[str, object] = {"benchmark": "mlflow_server", "mlflow": mlflow.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        port = _free_port()
        bindir = Path(sys.executable).parent
        cmd = [str(bindir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}"]
        cmd += ["--default-artifact-root", str(base / "artifacts"), "--workers", "1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the MLflow server did not start") from None
                    time.sleep(0.2)
            os.environ["MLFLOW_TRACKING_URI"] = url
            mlflow.set_tracking_uri(url)
            experiment = mlflow.set_experiment("bench-a")
            t0 = time.perf_counter()
            # MLflow prints a line per run ("View run ..."): kept off the one JSON line
            with contextlib.redirect_stdout(io.StringIO()):
                for i in range(args.runs):
                    with mlflow.start_run(experiment_id=experiment.experiment_id):
                        mlflow.log_params({f"p{j}": i * j for j in range(5)})
                        mlflow.log_metrics({f"m{j}": random.random() for j in range(10)})
            out["mlflow_server_runs_per_s"] = round(args.runs / (time.perf_counter() - t0), 1)

            client = MlflowClient(url)
            run = client.create_run(experiment.experiment_id)
            now = int(time.time() * 1000)
            t0 = time.perf_counter()
            for start in range(0, args.values, 1000):
                batch = [
                    Metric("loss", 1.0 / (s + 1), now, s)
                    for s in range(start, min(args.values, start + 1000))
                ]
                client.log_batch(run.info.run_id, metrics=batch)
            out["mlflow_server_metric_values_per_s"] = round(
                args.values / (time.perf_counter() - t0)
            )
            client.set_terminated(run.info.run_id)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
