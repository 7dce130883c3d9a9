"""Serving throughput and latency against the peers' workload; prints one JSON line.

Two models, chosen with ``--model``:

- ``breast-cancer`` (the default): RandomForestClassifier(n_estimators=100, random_state=0) on
  scikit-learn's breast cancer data.
- ``quickstart``: the model users get first, ``modelloop quickstart``'s HistGradientBoosting
  pipeline over the flights data, registered as ``flights-delay``. It has no ONNX form, so it is
  served with scikit-learn (``--runtime sklearn``, its default).

The model is registered and served by ``modelloop serve`` in its own process; single-row
requests to ``/v1/models/NAME/predict`` from wrk (Debian's package) with 16 connections, 3 runs
of 5 s after a warm-up; then one connection for the unloaded latency. The physical limit is the
model's own in-process predict of 1 and of 1,000 rows.

Large requests (skip with ``--no-bulk``): one request of 10,000 and one of 100,000 rows, 3 times
each (``bulk_10k_s``, ``bulk_100k_s``, medians) against the model's in-process predict of the
same rows (``inprocess_10k_s``, ``inprocess_100k_s``); single-row p50 at one connection while
another client sends 2,000-row requests back to back (``single_p50_ms_under_bulk``, against
``single_p50_ms_idle``); and two 2,000-row requests at once (``two_2000_row_statuses``, both 200).
The machine the figures come from may be shared: compare medians, not single runs;
``python_loop_10m_s`` (benchmarks/machine.py) says how fast it ran plain Python that day.

    python benchmarks/serving.py [--model breast-cancer|quickstart]
        [--runtime registered-onnx|serve-onnx|trees|sklearn] [--seconds 5] [--no-bulk]

Runtimes: ``registered-onnx`` (the forest's default) registers the model, attaches its checked
ONNX form with ``Client.convert_model`` (what ``modelloop models convert`` does; timed as
``convert_s``) and serves it with ``modelloop serve``'s defaults; ``serve-onnx`` registers
without converting and serves with ``--onnx`` (the first start converts); ``trees`` (the
quickstart's default) serves the tree form its package was saved with, predicted with NumPy;
``sklearn`` serves with ``--no-onnx --no-tree-form``.

Goals (issue #3): >= 2,000 req/s with p99 <= 50 ms at 16 connections; p50 <= 10 ms at one
connection; server RSS <= 300 MB; start to ready <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MODELS = {
    "breast-cancer": "RandomForestClassifier(n_estimators=100) breast cancer",
    "quickstart": "modelloop quickstart: HistGradientBoosting pipeline, flights (flights-delay)",
}
#: rows per request for the large-request figures, and the server limits that admit them
BULK_ROWS = (10_000, 100_000)
BULK_FLAGS = ["--max-rows", "100000", "--max-body-bytes", str(256 * 2**20)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register(home: Path, which: str, convert: bool) -> tuple[str, Any, Any, float | None]:
    """Train ``which`` and register it as NAME@champion in ``home`` (with its ONNX form when
    ``convert``); return the served name, the fitted model, a frame of its feature rows and
    the seconds converting took."""
    from modelloop._client import Client
    from modelloop._config import Settings

    client = Client(Settings(home=home))
    try:
        if which == "quickstart":
            from modelloop.data import FLIGHTS_FEATURES, load_flights
            from modelloop.demo import run_quickstart

            done = run_quickstart(client)
            name = done.model_name
            model = client.load_model(f"models:/{name}@champion").model
            X = load_flights()[list(FLIGHTS_FEATURES)].reset_index(drop=True)
        else:
            from sklearn.datasets import load_breast_cancer
            from sklearn.ensemble import RandomForestClassifier

            name = "breast-cancer"
            X, y = load_breast_cancer(return_X_y=True, as_frame=True)
            model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
            with client.start_run(experiment="serving-bench") as run:
                client.log_model(run.run_id, model, "model", input_example=X.head(50))
            mv = client.register_model(run.run_id, name)
            client.set_alias(name, "champion", mv.version)
        convert_s = None
        if convert:
            t0 = time.perf_counter()
            done_conv = client.convert_model(f"{name}@champion")
            if not done_conv.converted:
                raise SystemExit(f"the model did not convert: {done_conv.reason}")
            convert_s = round(time.perf_counter() - t0, 2)
    finally:
        client.close()
    return name, model, X, convert_s


def in_process(model: Any, X: Any, bulk: bool) -> dict[str, Any]:
    """The model's own predict_proba: 1 and 1,000 rows (median ms), and the large requests'
    rows (median s of 3) when ``bulk``."""

    def timed(frame: Any, repeat: int) -> float:
        model.predict_proba(frame)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            model.predict_proba(frame)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    rows = X.sample(1000, replace=True, random_state=0)
    one, thousand = timed(X.head(1), 200) * 1e3, timed(rows, 30) * 1e3
    out: dict[str, Any] = {
        "inprocess_1_row_ms": round(one, 3),
        "inprocess_1000_rows_ms": round(thousand, 3),
        "inprocess_rows_per_s": round(1000 / thousand * 1e3),
    }
    if bulk:
        for n in BULK_ROWS:
            out[f"inprocess_{n // 1000}k_s"] = round(timed(_rows(X, n), 3), 3)
    return out


def _rows(X: Any, n: int) -> Any:
    return X.sample(n, replace=n > len(X), random_state=1).reset_index(drop=True)


def _post(url: str, body: bytes, timeout: float = 300) -> tuple[int, float]:
    """POST ``body``; (status, seconds)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - t0


def bulk(url: str, X: Any, home: Path, seconds: float, runs: int) -> dict[str, Any]:
    """The large-request figures (see the module docstring) against a running server."""
    out: dict[str, Any] = {}
    for n in BULK_ROWS:
        body = json.dumps({"records": _rows(X, n).to_dict(orient="records")}).encode()
        times = []
        for _ in range(runs):
            status, took = _post(url, body)
            if status != 200:
                raise SystemExit(f"a {n}-row request got {status}")
            times.append(took)
        out[f"bulk_{n // 1000}k_s"] = round(statistics.median(times), 3)
    body_2000 = json.dumps({"records": _rows(X, 2000).to_dict(orient="records")}).encode()
    statuses: list[int] = []
    pair = [
        threading.Thread(target=lambda: statuses.append(_post(url, body_2000)[0])) for _ in range(2)
    ]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    out["two_2000_row_statuses"] = sorted(statuses)
    row = home / "row.json"
    out["single_p50_ms_idle"] = round(wrk(url, row, 1, seconds)["p50_ms"], 2)
    stop = threading.Event()
    sent: list[int] = []

    def sender() -> None:  # one client sending 2,000-row requests back to back
        while not stop.is_set():
            sent.append(_post(url, body_2000)[0])

    client = threading.Thread(target=sender)
    client.start()
    try:
        time.sleep(0.5)  # the first large request is in
        under = wrk(url, row, 1, seconds)
    finally:
        stop.set()
        client.join()
    out["single_p50_ms_under_bulk"] = round(under["p50_ms"], 2)
    out["single_p99_ms_under_bulk"] = round(under["p99_ms"], 2)
    out["bulk_2000_row_requests_meanwhile"] = {str(s): sent.count(s) for s in sorted(set(sent))}
    return out


def start_server(
    home: Path, name: str, port: int, extra: list[str]
) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):  # the registry is the home's
        env.pop(var, None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelloop",
            "serve",
            f"{name}@champion",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() - t0 > 60:
            proc.kill()
            raise SystemExit("server not ready after 60 s")
        time.sleep(0.02)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, body_file: Path, connections: int, seconds: float) -> dict:
    script = body_file.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "r")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = dict(re.findall(r"\s(50|75|90|99)%\s+([0-9.]+(?:us|ms|s))", out))

    def pct(p: str) -> float:
        m = re.match(r"([0-9.]+)(us|ms|s)", lat[p])
        return _ms(m.group(1), m.group(2))

    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    return rss, hwm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--model", choices=sorted(MODELS), default="breast-cancer")
    parser.add_argument(
        "--runtime",
        choices=["registered-onnx", "serve-onnx", "trees", "sklearn"],
        default=None,
        help="how the model is predicted (see above); the quickstart's default is trees, "
        "the others' registered-onnx",
    )
    parser.add_argument("--no-bulk", action="store_true", help="skip the large requests")
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    args = parser.parse_args()
    runtime = args.runtime or ("trees" if args.model == "quickstart" else "registered-onnx")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    # byte-compile the package as an installed wheel is (an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module at each server start)
    import compileall

    import modelloop

    compileall.compile_dir(Path(modelloop.__file__).parent, quiet=1)

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        name, model, X, convert_s = register(home, args.model, convert=runtime == "registered-onnx")
        register_s = round(time.perf_counter() - t0, 2)
        limit = in_process(model, X, bulk=not args.no_bulk)
        body = home / "row.json"
        body.write_text(json.dumps({"records": X.iloc[[0]].to_dict(orient="records")}))
        port = _free_port()
        flags = {
            "registered-onnx": [],
            "serve-onnx": ["--onnx"],
            "trees": ["--no-onnx"],
            "sklearn": ["--no-onnx", "--no-tree-form"],
        }
        extra = flags[runtime] + (BULK_FLAGS if not args.no_bulk else []) + args.server_arg
        proc, ready_s = start_server(home, name, port, extra)
        large: dict[str, Any] = {}
        try:
            url = f"http://127.0.0.1:{port}/v1/models/{name}/predict"
            wrk(url, body, args.connections, 2)  # warm-up
            runs = [wrk(url, body, args.connections, args.seconds) for _ in range(args.runs)]
            single = wrk(url, body, 1, args.seconds)
            rss, hwm = rss_mb(proc.pid)
            if not args.no_bulk:
                large = bulk(url, X, home, args.seconds, args.runs)
        finally:
            proc.terminate()
            proc.wait(30)
        # a second start on the same home: what a restart or a new replica pays (with an ONNX
        # form, registered or converted at the first start, or with a tree form, scikit-learn
        # is never imported)
        proc, restart_s = start_server(home, name, port, extra)
        proc.terminate()
        proc.wait(30)
        best = max(runs, key=lambda r: r["rps"])
        result = {
            "benchmark": "serving",
            "model": MODELS[args.model],
            "served_as": name,
            "runtime": runtime,
            "serve_flags": extra,
            "connections": args.connections,
            "rps": [round(r["rps"]) for r in runs],
            "rps_median": round(statistics.median(r["rps"] for r in runs)),
            "p50_ms": [round(r["p50_ms"], 2) for r in runs],
            "p99_ms": [round(r["p99_ms"], 2) for r in runs],
            "p99_ms_median": round(statistics.median(r["p99_ms"] for r in runs), 2),
            "non_2xx": sum(r["non_2xx"] for r in runs) + single["non_2xx"],
            "best_run": best,
            "one_connection_p50_ms": round(single["p50_ms"], 2),
            "one_connection_p99_ms": round(single["p99_ms"], 2),
            "one_connection_rps": round(single["rps"]),
            "server_rss_mb": round(rss, 1),
            "server_peak_rss_mb": round(hwm, 1),
            "start_to_ready_s": round(ready_s, 2),
            "restart_to_ready_s": round(restart_s, 2),
            "register_s": register_s,
            "convert_s": convert_s,
            **limit,
            **large,
            "goals": {
                "rps": 2000,
                "p99_ms": 50,
                "one_connection_p50_ms": 10,
                "server_rss_mb": 300,
                "start_to_ready_s": 2,
            },
        }
        from machine import python_loop_10m_s  # this machine's speed today

        result["python_loop_10m_s"] = python_loop_10m_s()
        print(json.dumps(result))


if __name__ == "__main__":
    main()
