"""The control-plane server's throughput on this machine; prints one JSON line.

A real ``modelloop server`` process over a new SQLite file, the client in this process talking
HTTP to it with only the server's URL:

* ``runs_per_s``: the workload of ``benchmarks/tracking.py`` (a): runs of 5 params and 10
  metrics each, through the server, the median of three passes of 200 after 20 to warm up;
  ``embedded_runs_per_s``: the same on the embedded store.
* ``metric_values_per_s``: 100,000 buffered ``log_metric`` calls, one request per flush of
  10,000 values, flushes included.
* ``search_100k_first_page_s``: the median of 20 first pages (100 runs) of ``search_runs`` with
  a metric filter over an experiment of 100,000 runs (bulk-loaded into the database first).
* ``upload_mb_per_s`` / ``download_mb_per_s``: one 500 MB file through ``put_file`` and
  ``get_file`` (digests verified at both ends), with the peak RSS of the server and client.

* ``python_loop_10m_s``: how fast this machine runs plain Python today (benchmarks/machine.py),
  to read the figures beside those of another day.
* with ``--mlflow-python PY`` (an interpreter that has MLflow, kept out of modelloop's own
  environment): ``mlflow_server_runs_per_s`` and ``mlflow_server_metric_values_per_s``, MLflow's
  tracking server over SQLite on the same workload (``benchmarks/mlflow_server_peer.py``).

Usage: python benchmarks/server.py [--blob-mb 500] [--search-runs 100000] [--mlflow-python PY]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _runs(client: object, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        with client.start_run("bench-a", flush_interval=0) as run:  # type: ignore[attr-defined]
            run.log_params({f"p{j}": i * j for j in range(5)})
            run.log_metrics({f"m{j}": random.random() for j in range(10)})
    return n / (time.perf_counter() - t0)


def _median_runs_per_s(client: object) -> float:
    """Runs/s of :func:`_runs`: 20 runs to warm up (first requests compile statements and
    open connections), then the median of three passes of 200 (this machine's speed drifts)."""
    _runs(client, 20)
    return round(statistics.median(_runs(client, 200) for _ in range(3)), 1)


def _bulk_runs(store_url: str, experiment_id: int, n: int) -> None:
    """``n`` finished runs with an ``auc`` metric, inserted in bulk (the benchmark is about
    reading them, and one request per run would take minutes)."""
    import sqlalchemy as sa

    from modelloop.store._sql import _schema as T

    rng = random.Random(0)
    now = int(time.time() * 1000)
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            runs, metrics, latest = [], [], []
            for i in range(start, min(n, start + 10_000)):
                rid = uuid.uuid4().hex
                runs.append(
                    {
                        "run_id": rid,
                        "experiment_id": experiment_id,
                        "run_name": f"r{i}",
                        "status": "FINISHED",
                        "start_time": now - n + i,
                        "end_time": now,
                        "user_name": "bench",
                    }
                )
                value = rng.random()
                row = {"run_id": rid, "key": "auc", "value": value, "step": 0, "timestamp": now}
                metrics.append(row)
                latest.append(row)
            conn.execute(T.runs.insert(), runs)
            conn.execute(T.metrics.insert(), metrics)
            conn.execute(T.latest_metrics.insert(), latest)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blob-mb", type=int, default=500)
    parser.add_argument("--search-runs", type=int, default=100_000)
    parser.add_argument("--mlflow-python", default=None, help="an interpreter with MLflow")
    args = parser.parse_args()

    from modelloop import Client, Settings

    out: dict[str, object] = {"benchmark": "server", "store": "sqlite"}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        store_url = f"sqlite:///{base / 'server' / 'store.db'}"
        (base / "server").mkdir()
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
        env.update(MODELLOOP_HOME=str(base / "server"), MODELLOOP_STORE_URL=store_url)
        cmd = [sys.executable, "-m", "modelloop", "server", "--port", str(port)]
        cmd += ["--max-upload-mb", str(args.blob_mb + 1)]
        proc = subprocess.Popen(cmd, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.1)
            client = Client(Settings(home=base / "client", store_url=url))

            out["runs_per_s"] = _median_runs_per_s(client)
            embedded = Client(Settings(home=base / "embedded"))
            out["embedded_runs_per_s"] = _median_runs_per_s(embedded)
            embedded.close()

            run = client.start_run("bench-b", flush_every=10_000, flush_interval=0)
            t0 = time.perf_counter()
            for step in range(100_000):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
            run.flush()
            out["metric_values_per_s"] = round(100_000 / (time.perf_counter() - t0))
            run.end()
            assert client.store.count_metric_values(run.run_id, "loss") == 100_000

            exp = client.store.create_experiment("bench-search")
            _bulk_runs(store_url, exp.experiment_id, args.search_runs)
            times, page = [], None
            for _ in range(20):
                t0 = time.perf_counter()
                page = client.search_runs("bench-search", filter="metrics.auc > 0.8")
                times.append(time.perf_counter() - t0)
            assert page is not None and len(page) == 100 and page.next_page_token
            out["search_runs"] = args.search_runs
            out["search_100k_first_page_s"] = round(statistics.median(times), 4)

            blob = base / "blob.bin"
            with open(blob, "wb") as f:
                for _ in range(args.blob_mb):
                    f.write(os.urandom(1 << 20))
            t0 = time.perf_counter()
            info = client.artifacts.put_file(blob)
            out["upload_mb_per_s"] = round(args.blob_mb / (time.perf_counter() - t0), 1)
            blob.unlink()
            t0 = time.perf_counter()
            client.artifacts.get_file(info.digest, base / "back.bin")
            out["download_mb_per_s"] = round(args.blob_mb / (time.perf_counter() - t0), 1)
            assert (base / "back.bin").stat().st_size == args.blob_mb << 20
            out["blob_mb"] = args.blob_mb
            out["server_peak_rss_mb"] = _peak_rss_mb(proc.pid)
            out["client_peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            )
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if args.mlflow_python:
        peer = Path(__file__).with_name("mlflow_server_peer.py")
        done = subprocess.run(
            [args.mlflow_python, str(peer)], capture_output=True, text=True, check=True
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures.pop("benchmark", None)
        out.update(figures)
    from machine import python_loop_10m_s  # this machine's speed today, beside its figures

    out["python_loop_10m_s"] = python_loop_10m_s()
    out["python"] = sys.version.split()[0]
    out["machine"] = platform.machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
