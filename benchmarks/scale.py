"""Batch scoring throughput of ``modelloop score``; prints one JSON line.

The quickstart's flights model (gradient boosting over seven columns) scores ``--rows`` flights
rows: the bundled 2013 data repeated, with perturbed delays and distances, in ``--files`` Parquet
files made in a temporary folder. Measured, in rows per second:

- ``inprocess_rows_per_s``: ``predict_proba`` on frames already in memory, validated, in batches
  of ``--batch-rows``: the limit, the model itself;
- ``naive_rows_per_s``: a plain loop of ``pandas.read_parquet`` per file + ``predict_proba``
  (no validation, nothing written);
- ``local_rows_per_s`` / ``local2_rows_per_s``: ``modelloop score`` with the local executor and
  1 / 2 processes, end to end (reading, validating, predicting, writing Parquet), as a child
  process; its wall time from start to the JSON summary;
- ``ray_rows_per_s``: the same with ``--executor ray --workers 2`` on a Ray head started here
  on 127.0.0.1 with 2 CPUs (left out with ``--no-ray``);
- ``*_rows_per_cpu_s``: the same per CPU second (all threads and worker processes), which a
  busy shared machine moves less than the wall time;
- ``peak_rss_mb``: the largest peak resident memory of any local scoring process (the job and
  its worker processes, started from a small launcher: a child forked from this script
  would count this script's memory; Ray's workers are the cluster's processes and are not
  counted);
- ``s3_*`` (with ``--s3``): the 1-process local run reading the same files from a moto S3
  server started here.

- ``s3_window_1h_s`` (and the other ``s3_window_*``/``s3_log_*`` figures): a one-hour monitoring
  window over 30 days of prediction log on a moto S3 server, from ``benchmarks/s3_window.py``
  (left out with ``--skip-s3-window``).

Goals: local >= 80% of inprocess; ray within 10% of local2; peak RSS <= 1 GB whatever the
input size.

Usage: python benchmarks/scale.py [--rows 10000000] [--files 8] [--no-ray] [--s3]
    [--skip-s3-window]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_input(folder: Path, rows: int, files: int, row_group_rows: int) -> list[Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelloop.data import FLIGHTS_FEATURES, load_flights

    base = load_flights()[list(FLIGHTS_FEATURES)].reset_index(drop=True)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files)
    paths, made = [], 0
    for i in range(files):
        n = min(per_file, rows - made)
        if n <= 0:
            break
        path = folder / f"flights-{i:03d}.parquet"
        with pq.ParquetWriter(path, pa.Schema.from_pandas(base, preserve_index=False)) as w:
            done = 0
            while done < n:
                m = min(row_group_rows, n - done)
                idx = rng.integers(0, len(base), m)
                chunk = base.iloc[idx].reset_index(drop=True)
                chunk["dep_delay"] = chunk["dep_delay"] + rng.integers(-3, 4, m)
                chunk["distance"] = chunk["distance"] + rng.integers(0, 2, m)
                w.write_table(pa.Table.from_pandas(chunk, preserve_index=False))
                done += m
        paths.append(path)
        made += n
    return paths


#: Runs a command and reports its CPU seconds and peak RSS (it and its worker processes). A
#: child's peak RSS counts the memory of the process it was forked from until its exec, so the
#: scoring job is started from this small launcher, not from the benchmark's own large process.
_LAUNCH = """import json, resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write("\\n" + json.dumps([u.ru_utime + u.ru_stime, u.ru_maxrss]) + "\\n")
sys.exit(rc)
"""


def _score(env: dict[str, str], args: list[str]) -> tuple[dict, float, float, float]:
    """The summary, wall seconds, CPU seconds and peak RSS in MB of one ``modelloop score`` run
    as a child process (CPU and peak RSS: the job's and its worker processes')."""
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "modelloop", "score", *args, "--json"]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, *command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"modelloop score failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu, maxrss_kb = json.loads(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout), seconds, cpu, maxrss_kb / 1024


def _start_ray(temp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the Ray head did not start")
        time.sleep(0.5)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--row-group-rows", type=int, default=131_072)
    parser.add_argument("--batch-rows", type=int, default=262_144)
    parser.add_argument("--part-rows", type=int, default=1_000_000)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    parser.add_argument("--s3", action="store_true", help="also read the input from moto S3")
    parser.add_argument(
        "--skip-s3-window",
        action="store_true",
        help="skip the one-hour window over 30 days of S3 log (benchmarks/s3_window.py)",
    )
    args = parser.parse_args()

    import pandas as pd
    import pyarrow.parquet as pq

    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.data import FLIGHTS_FEATURES
    from modelloop.demo import run_quickstart
    from modelloop.scoring._job import _model_source
    from modelloop.scoring._runner import Runner

    out: dict[str, object] = {
        "benchmark": "scale",
        "rows": args.rows,
        "files": args.files,
        "batch_rows": args.batch_rows,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory(prefix="modelloop-scale-") as tmp:
        root = Path(tmp)
        home = root / "home"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT")
        }
        env["MODELLOOP_HOME"] = str(home)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        src = Path(__file__).resolve().parents[1] / "src"
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        os.environ["MODELLOOP_HOME"] = str(home)
        client = Client(Settings.from_env())
        run_quickstart(client, model_name="flights-delay")
        paths = _make_input(root / "data", args.rows, args.files, args.row_group_rows)
        features = list(FLIGHTS_FEATURES)
        # the limit predicts with the scorer's own runner: the same form (the version's ONNX
        # form when it has one, else scikit-learn) and the same label and probability outputs
        source, _ = _model_source(client, "flights-delay@champion", None)
        runner = Runner(source)
        signature = runner.signature
        out["inprocess_form"] = source.form

        # the limit: the model on validated frames already in memory, batch by batch
        sample = pq.read_table(paths[0]).to_pandas()
        sample = sample.head(min(len(sample), 500_000))
        frames = [
            signature.validate(sample.iloc[i : i + args.batch_rows])
            for i in range(0, len(sample), args.batch_rows)
        ]
        runner.predict(frames[0])

        def inprocess() -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            for f in frames:
                runner.predict(f)
            return len(sample) / (time.perf_counter() - t0), len(sample) / (
                time.process_time() - c0
            )

        limits = [inprocess()]
        # naive: whole files through pandas, nothing checked or written
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for p in paths:
            df = pd.read_parquet(p)
            runner.predict(df[features])
            n += len(df)
            del df
        out["naive_rows_per_s"] = round(n / (time.perf_counter() - t0))
        out["naive_rows_per_cpu_s"] = round(n / (time.process_time() - c0))

        data = str(root / "data")
        common = [
            "flights-delay@champion",
            "--data",
            data,
            "--batch-rows",
            str(args.batch_rows),
            "--part-rows",
            str(args.part_rows),
        ]
        summary, secs, cpu, rss1 = _score(env, [*common, "--out", str(root / "o1")])
        out["local_rows_per_s"] = round(summary["rows_in"] / secs)
        out["local_rows_per_cpu_s"] = round(summary["rows_in"] / cpu)
        out["local_form"] = summary["form"]
        summary, secs, cpu, rss2 = _score(
            env, [*common, "--out", str(root / "o2"), "--workers", "2"]
        )
        out["local2_rows_per_s"] = round(summary["rows_in"] / secs)
        out["local2_rows_per_cpu_s"] = round(summary["rows_in"] / cpu)
        out["peak_rss_mb"] = round(max(rss1, rss2))
        out["rows_rejected"] = summary["rows_rejected"]
        limits.append(inprocess())  # again, after: the machine's load moves between the two
        wall = sum(w for w, _ in limits) / len(limits)
        per_cpu = sum(c for _, c in limits) / len(limits)
        out["inprocess_rows_per_s"] = round(wall)
        out["inprocess_rows_per_cpu_s"] = round(per_cpu)
        out["local_vs_inprocess"] = round(float(out["local_rows_per_s"]) / wall, 3)  # type: ignore[arg-type]
        out["local_vs_inprocess_cpu"] = round(float(out["local_rows_per_cpu_s"]) / per_cpu, 3)  # type: ignore[arg-type]
        if not args.no_ray:
            ray_tmp = Path(tempfile.mkdtemp(prefix="mlray-"))
            proc, address = _start_ray(ray_tmp, env)
            try:
                summary, secs, _, _ = _score(
                    env,
                    [
                        *common,
                        "--out",
                        str(root / "o3"),
                        "--executor",
                        "ray",
                        "--workers",
                        "2",
                        "--ray-address",
                        address,
                    ],
                )
                out["ray_rows_per_s"] = round(summary["rows_in"] / secs)
                ray_rate, local2 = float(out["ray_rows_per_s"]), float(out["local2_rows_per_s"])  # type: ignore[arg-type]
                out["ray_vs_local2"] = round(ray_rate / local2, 3)
            finally:
                _stop_group(proc)
                shutil.rmtree(ray_tmp, ignore_errors=True)
        if args.s3:
            out.update(_s3_run(root, env, common, paths))
        client.close()
    if not args.skip_s3_window:
        out.update(_s3_window())
    print(json.dumps(out))


def _s3_window() -> dict:
    """The figures of ``benchmarks/s3_window.py`` (imported here: it is a script beside this
    one, not a module of the package)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from s3_window import s3_window

    return s3_window()


def _s3_run(root: Path, env: dict[str, str], common: list[str], paths: list[Path]) -> dict:
    import boto3

    port = _free_port()
    s3_env = {
        **env,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "NO_PROXY": "127.0.0.1",
    }
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket="scale")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        for p in paths:
            s3.upload_file(str(p), "scale", f"in/{p.name}")
        args = [common[0], "--data", "s3://scale/in/", *common[3:]]
        summary, secs, _, rss = _score(s3_env, [*args, "--out", str(root / "o4")])
        return {
            "s3_local_rows_per_s": round(summary["rows_in"] / secs),
            "s3_peak_rss_mb": round(rss),
        }
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
