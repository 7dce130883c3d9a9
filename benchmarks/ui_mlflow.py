"""MLflow's UI on the store size of ``benchmarks/ui.py``, for comparison; prints one JSON line.

MLflow is not a dependency: install it in a venv of its own and pass its ``mlflow`` command
(``python -m venv mlf-venv && mlf-venv/bin/pip install 'mlflow>=3,<4'``). The runs are
bulk-inserted into MLflow's SQLite schema (created by its server) as in ``benchmarks/ui.py``:
100,000 runs x (10 params, 10 metrics), and one run with 10 metrics x 100,000 steps.

MLflow's UI is a single-page app, so each figure waits for what a person waits for:
``runs_page_first_paint_s`` (first contentful paint), ``runs_page_rows_s`` (the newest run's
row shown), ``filter_sort_s`` (a filter + sort set in the app's URL until the top run of the
new order is shown), ``compare_s`` (the compare page of 20 runs until the last run's name is
shown) and ``chart_100k_steps_s`` (the long run's metrics tab until a first curve is drawn).

Usage: python benchmarks/ui_mlflow.py --mlflow mlf-venv/bin/mlflow [--runs 100000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

# the same browser, flags, first-paint probe and server start as modelloop's own figures
from ui import ARGS, CHROMIUM, FIRST_PAINT, free_port, launch


def start(mlflow: str, db: Path, art: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{db}"]
    cmd += ["--default-artifact-root", str(art), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]
    return launch(cmd, url + "/health", "mlflow server", tries=600), url


def fill(db: Path, art: Path, n_runs: int, n_steps: int) -> tuple[list[str], str, str]:
    rng = random.Random(0)
    now = int(time.time() * 1000)
    con = sqlite3.connect(db)
    with con:
        for exp_id, name in ((1, "bench-ui"), (2, "bench-ui-steps")):
            con.execute(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
                "creation_time, last_update_time) VALUES (?, ?, ?, 'active', ?, ?)",
                (exp_id, name, str(art / str(exp_id)), now, now),
            )
        run_ids = [uuid.uuid4().hex for _ in range(n_runs)]
        con.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
            "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
            "artifact_uri, experiment_id) VALUES (?, ?, 'LOCAL', '', '', 'bench', 'FINISHED', ?, "
            "?, '', 'active', ?, 1)",
            (
                (r, f"run-{i}", now - i * 1000, now - i * 1000 + 500, str(art / r))
                for i, r in enumerate(run_ids)
            ),
        )
        con.executemany(
            "INSERT INTO tags (key, value, run_uuid) VALUES ('mlflow.runName', ?, ?)",
            ((f"run-{i}", r) for i, r in enumerate(run_ids)),
        )
        con.executemany(
            "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
            ((f"p{j}", str(rng.randint(0, 50)), r) for r in run_ids for j in range(10)),
        )
        values = {(r, j): rng.random() for r in run_ids for j in range(10)}
        con.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
            "VALUES (?, ?, ?, 0, 0, ?)",
            ((f"m{j}", values[r, j], now, r) for r in run_ids for j in range(10)),
        )
        con.executemany(
            "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
            "VALUES (?, ?, ?, ?, 0, 0)",
            ((f"m{j}", values[r, j], now, r) for r in run_ids for j in range(10)),
        )
        long_run = uuid.uuid4().hex
        con.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
            "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
            "artifact_uri, experiment_id) VALUES (?, 'long', 'LOCAL', '', '', 'bench', "
            "'FINISHED', ?, ?, '', 'active', ?, 2)",
            (long_run, now, now + 1, str(art / long_run)),
        )
        for j in range(10):
            con.executemany(
                "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                "VALUES (?, ?, ?, ?, ?, 0)",
                (
                    (f"m{j}", rng.gauss(0, 1) + s / n_steps, now + s, long_run, s)
                    for s in range(n_steps)
                ),
            )
            con.execute(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (?, 1.0, ?, ?, 0, ?)",
                (f"m{j}", now + n_steps, n_steps - 1, long_run),
            )
    top = max(
        (i for i in range(n_runs) if values[run_ids[i], 0] > 0.5),
        key=lambda i: values[run_ids[i], 1],
    )
    con.execute("ANALYZE")
    con.close()
    return run_ids[:20], long_run, f"run-{top}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mlflow", required=True, help="the mlflow command of its own venv")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    version = subprocess.run(
        [args.mlflow, "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    out: dict[str, object] = {"benchmark": "ui_mlflow", "mlflow": version, "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        db, art = Path(tmp) / "mlflow.db", Path(tmp) / "art"
        proc, url = start(args.mlflow, db, art)  # creates the schema
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        t0 = time.perf_counter()
        twenty, long_run, top = fill(db, art, args.runs, args.steps)
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        proc, url = start(args.mlflow, db, art)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                paints, rows, filters, compares, charts = [], [], [], [], []
                for i in range(args.repeat):
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    t = time.perf_counter()
                    page.goto(f"{url}/#/experiments/1/runs?i={i}")
                    paints.append(page.evaluate(FIRST_PAINT))
                    page.get_by_text("run-0", exact=True).first.wait_for(timeout=180_000)
                    rows.append(time.perf_counter() - t)
                    flt = quote(f"metrics.m0 > 0.5 and params.p0 != 'x{i}'")
                    t = time.perf_counter()
                    page.evaluate(
                        "h => { window.location.hash = h; }",
                        f"#/experiments/1/runs?searchFilter={flt}&orderByKey={quote('metrics.`m1`')}"
                        "&orderByAsc=false",
                    )
                    page.get_by_text(top, exact=True).first.wait_for(timeout=180_000)
                    filters.append(time.perf_counter() - t)
                    runs = quote(json.dumps(twenty))
                    t = time.perf_counter()
                    page.goto(f"{url}/#/compare-runs?runs={runs}&experiments=%5B%221%22%5D")
                    page.get_by_text("run-19", exact=True).first.wait_for(timeout=180_000)
                    compares.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    page.goto(f"{url}/#/experiments/2/runs/{long_run}/model-metrics")
                    page.locator(".js-plotly-plot .scatterlayer .trace").first.wait_for(
                        timeout=180_000
                    )
                    charts.append(time.perf_counter() - t)
                    page.close()
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    out["runs_page_first_paint_s"] = round(statistics.median(paints), 3)
    out["runs_page_rows_s"] = round(statistics.median(rows), 3)
    out["filter_sort_s"] = round(statistics.median(filters), 3)
    out["compare_s"] = round(statistics.median(compares), 3)
    out["chart_100k_steps_s"] = round(statistics.median(charts), 3)
    out["python"] = sys.version.split()[0]
    out["machine"] = platform.machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
