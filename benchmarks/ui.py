"""The dashboard at scale, measured in Chromium (Debian's package, driven by Playwright);
prints one JSON line.

Store: 100,000 runs x (10 params, 10 metrics) in one experiment, plus one run with 10 metrics x
100,000 steps. The rows are bulk-inserted into the store's SQLite schema (creating 100,000 runs
through the API takes many minutes; the pages read them through the store as usual).

- ``runs_page_first_paint_s``: the runs page (newest first, 50 rows) to first contentful paint;
- ``filter_sort_s``: a filter + sort on metrics (``metrics.m0 > 0.5``, by ``metrics.m1``),
  navigation start to the table parsed (DOMContentLoaded);
- ``compare_s``: the compare page of 20 runs until its 10 overlaid charts (200 series) and the
  parallel-coordinates plot are drawn;
- ``chart_100k_steps_s``: one 100,000-step metric fetched (downsampled on the server, extremes
  kept) and drawn; ``run_page_10x100k_s``: the run page until all 10 such charts are drawn.

Each figure is the median of ``--repeat`` loads (default 5).

Usage: python benchmarks/ui.py [--runs 100000] [--steps 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def fill(home: Path, n_runs: int, n_steps: int) -> tuple[int, list[str], str]:
    from modelloop import Client, Settings

    client = Client(Settings(home=home))
    exp = client.store.create_experiment("bench-ui")
    big = client.store.create_experiment("bench-ui-steps")
    db = Path(client.settings.resolved_store_url.removeprefix("sqlite:///"))
    client.close()
    rng = random.Random(0)
    now = int(time.time() * 1000)
    run_ids = [uuid.uuid4().hex for _ in range(n_runs)]
    con = sqlite3.connect(db)
    with con:
        con.executemany(
            "INSERT INTO runs (run_id, experiment_id, run_name, status, start_time, end_time, "
            "user_name) VALUES (?, ?, ?, 'FINISHED', ?, ?, 'bench')",
            (
                (r, exp.experiment_id, f"run-{i}", now - i * 1000, now - i * 1000 + 500)
                for i, r in enumerate(run_ids)
            ),
        )
        con.executemany(
            "INSERT INTO params (run_id, key, value) VALUES (?, ?, ?)",
            ((r, f"p{j}", str(rng.randint(0, 50))) for r in run_ids for j in range(10)),
        )
        con.executemany(
            "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) "
            "VALUES (?, ?, ?, 0, ?)",
            ((r, f"m{j}", rng.random(), now) for r in run_ids for j in range(10)),
        )
        con.executemany(
            "INSERT INTO metrics (run_id, key, value, step, timestamp) VALUES (?, ?, ?, 0, ?)",
            ((r, f"m{j}", rng.random(), now) for r in run_ids[:20] for j in range(10)),
        )
        long_run = uuid.uuid4().hex
        con.execute(
            "INSERT INTO runs (run_id, experiment_id, run_name, status, start_time, end_time, "
            "user_name) VALUES (?, ?, 'long', 'FINISHED', ?, ?, 'bench')",
            (long_run, big.experiment_id, now, now + 1),
        )
        for j in range(10):
            con.executemany(
                "INSERT INTO metrics (run_id, key, value, step, timestamp) VALUES (?, ?, ?, ?, ?)",
                (
                    (long_run, f"m{j}", rng.gauss(0, 1) + s / n_steps, s, now)
                    for s in range(n_steps)
                ),
            )
            con.execute(
                "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) "
                "VALUES (?, ?, 1.0, ?, ?)",
                (long_run, f"m{j}", n_steps - 1, now),
            )
    con.execute("ANALYZE")
    con.close()
    return exp.experiment_id, run_ids[:20], long_run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    cmd: list[str],
    ready_url: str,
    what: str,
    *,
    env: dict[str, str] | None = None,
    tries: int = 300,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` quietly and wait (0.2 s a try) until ``ready_url`` answers."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(tries):
        try:
            with urllib.request.urlopen(ready_url, timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{what} did not start")


def start(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "modelloop", "ui", "--port", str(port)]
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    return launch(cmd, url + "/", "modelloop ui", env=env), url


#: seconds from navigation start to first contentful paint (waits for the entry if needed)
FIRST_PAINT = """() => new Promise(resolve => {
  new PerformanceObserver((list, observer) => {
    const e = list.getEntriesByName('first-contentful-paint')[0];
    if (e) { observer.disconnect(); resolve(e.startTime / 1000); }
  }).observe({ type: 'paint', buffered: true });
})"""

CHARTS_DRAWN = (
    "n => { const c = [...document.querySelectorAll('.chart, #parcoords')];"
    " return c.length >= n && c.every(d => d.getAttribute('data-loaded') === 'true'); }"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out: dict[str, object] = {"benchmark": "ui", "runs": args.runs, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        t0 = time.perf_counter()
        exp_id, twenty, long_run = fill(home, args.runs, args.steps)
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        proc, url = start(home)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url + "/static/plotly.min.js")  # a warm cache, as on a second visit
                paints, filters, compares, charts, pages = [], [], [], [], []
                for i in range(args.repeat):
                    page.goto(f"{url}/experiments/{exp_id}?r={i}")
                    paints.append(page.evaluate(FIRST_PAINT))
                    t = time.perf_counter()
                    page.goto(
                        f"{url}/experiments/{exp_id}?filter=metrics.m0+>+0.{5 + i % 4}"
                        "&sort=metrics.m1&dir=desc",
                        wait_until="domcontentloaded",
                    )
                    filters.append(time.perf_counter() - t)
                    assert page.locator("#runs tbody tr[data-run-id]").count() == 50
                    query = "&".join(f"run={r}" for r in twenty)
                    t = time.perf_counter()
                    page.goto(f"{url}/compare?{query}&i={i}")
                    page.wait_for_function(CHARTS_DRAWN, arg=11, timeout=120_000)
                    compares.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    page.goto(f"{url}/runs/{long_run}?i={i}")
                    page.wait_for_function(
                        "() => document.querySelector('.chart[data-loaded=\"true\"]') !== null",
                        timeout=120_000,
                    )
                    charts.append(time.perf_counter() - t)
                    page.wait_for_function(CHARTS_DRAWN, arg=10, timeout=120_000)
                    pages.append(time.perf_counter() - t)
                    points = page.evaluate(
                        "() => document.querySelector('.chart').data[0].x.length"
                    )
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    out["runs_page_first_paint_s"] = round(statistics.median(paints), 3)
    out["filter_sort_s"] = round(statistics.median(filters), 3)
    out["compare_s"] = round(statistics.median(compares), 3)
    out["chart_100k_steps_s"] = round(statistics.median(charts), 3)
    out["run_page_10x100k_s"] = round(statistics.median(pages), 3)
    out["chart_points_drawn"] = points
    out["goals_met"] = (
        out["runs_page_first_paint_s"] <= 1.0  # type: ignore[operator]
        and out["filter_sort_s"] <= 0.3  # type: ignore[operator]
        and out["compare_s"] <= 1.0  # type: ignore[operator]
        and out["chart_100k_steps_s"] <= 1.0  # type: ignore[operator]
    )
    out["python"] = sys.version.split()[0]
    out["machine"] = platform.machine()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
