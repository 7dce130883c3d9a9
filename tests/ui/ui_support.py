"""Helpers for dashboard tests: a store filled by real tracking and registry calls, a real
``modelloop ui`` process, and Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3_support import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_PARAM = "<script>alert('param')</script>"
EXPERIMENT = "flights-demo"
N_SWEEP = 30


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


@dataclass
class Filled:
    """What :func:`fill_store` created, for the tests to check the pages against."""

    home: Path
    experiment_id: int
    model_run: str
    xss_run: str
    sweep_runs: list[str] = field(default_factory=list)


def fill_store(home: Path, *, onnx: bool = False) -> Filled:
    """A store as a small project leaves it: a sweep of tracked runs with params and metric
    curves, one run with a dataset and a logged, registered model (two versions, the champion
    alias moved between them; with ``onnx``, v2's ONNX form attached), and a run whose name and
    param are HTML."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.store import Metric

    client = Client(Settings(home=home, user="ada"))
    try:
        X, y = load_breast_cancer(return_X_y=True, as_frame=True)
        X = X.iloc[:, :5]
        sweep = []
        for i in range(N_SWEEP):
            with client.start_run(EXPERIMENT, name=f"sweep-{i:02d}") as run:
                client.store.log_params(
                    run.run_id,
                    {"C": round(0.05 * (i % 7 + 1), 2), "penalty": "l2" if i % 3 else "l1"},
                )
                curve = [Metric("loss", 1.0 / (s + 1) + 0.01 * i, s) for s in range(40)]
                client.store.log_metrics(
                    run.run_id, [*curve, Metric("auc", 0.70 + (i * 7 % 30) / 100, 0)]
                )
                sweep.append(run.run_id)
        versions = []
        for C in (0.1, 1.0):
            with client.start_run(EXPERIMENT, name=f"train-C{C}") as run:
                client.store.log_params(run.run_id, {"C": C, "penalty": "l2"})
                client.log_dataset(run.run_id, X, "cancer-train", source="sklearn")
                model = LogisticRegression(C=C, max_iter=500).fit(X, y)
                client.log_model(run.run_id, model, "model", input_example=X.head(5))
                scores = np.linspace(0.6, 0.95, 25)
                client.store.log_metrics(
                    run.run_id, [Metric("auc", float(v), s) for s, v in enumerate(scores)]
                )
                model_run = run.run_id
            versions.append(client.register_model(model_run, "cancer").version)
        client.set_alias("cancer", "champion", versions[0])
        client.set_alias("cancer", "champion", versions[1])
        if onnx:
            converted = client.convert_model(f"models:/cancer/{versions[1]}", check_data=X)
            assert converted.converted, converted.reason
        client.set_alias("cancer", "challenger", versions[0])
        fill_monitoring(client.store, "cancer", X)
        fill_loop(client.store, "cancer")
        with client.start_run(EXPERIMENT, name=XSS_NAME) as run:
            client.store.log_params(run.run_id, {"C": 0.5, "note": XSS_PARAM})
            client.store.set_tags(run.run_id, {"owner": "<b>bold</b>"})
            client.store.log_metrics(run.run_id, [Metric("auc", 0.5, 0)])
            xss_run = run.run_id
        experiment_id = client.store.get_experiment_by_name(EXPERIMENT).experiment_id
        return Filled(home, experiment_id, model_run, xss_run, sweep)
    finally:
        client.close()


#: monitoring windows stored by :func:`fill_monitoring`, and their drift shift (in std units)
SHIFTS = (0.0, 0.0, 0.2, 0.6, 1.2, 1.5)
DRIFT_RULE = "drift_share_above_0.5"


def fill_monitoring(store: Any, model: str, reference: Any) -> None:
    """Monitoring results as ``run_monitor`` stores them: real drift tests of windows whose
    inputs shift more and more, live accuracy, and a drift-share alert that fires then resolves."""
    import numpy as np

    from modelloop.monitoring import (
        AlertManager,
        DriftShareAbove,
        MonitorResult,
        ReferenceProfile,
        StoreAlertStates,
        detect_drift,
    )

    profile = ReferenceProfile.from_frame(reference)
    rng = np.random.default_rng(1)
    day = 86_400_000
    start = 1_767_225_600_000  # 2026-01-01
    shifts = [*SHIFTS, 0.0]  # the last window is back to normal: the alert resolves
    for i, shift in enumerate(shifts):
        rows = reference.sample(300, random_state=i, replace=True).reset_index(drop=True)
        current = rows + shift * reference.std() + rng.normal(0, 0.01, rows.shape)
        drift = detect_drift(profile, current)
        end = start + (i + 1) * day
        result = MonitorResult(model, drift=drift, timestamp=end)
        AlertManager(
            [DriftShareAbove(0.5)], store=StoreAlertStates(store), clock=lambda e=end: e
        ).evaluate(result)
        store.add_monitoring_result(
            model,
            model_version=2,
            window_start=end - day,
            window_end=end,
            num_rows=len(current),
            share_drifted=drift.share_drifted,
            dataset_drift=drift.dataset_drift,
            drifted_columns=drift.drifted_columns,
            metrics={"accuracy": 0.95 - shift / 10},
            payload=result.to_dict(),
            created_at=end,
        )


#: the loop history of :func:`fill_loop`: (kind, state after, message, evidence)
LOOP_STEPS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("trigger", "retraining", "drift share 100% >= 50%", {"share_drifted": 1.0}),
    ("retrain", "gating", "trained v3 on 2,100 rows", {"rows": 2100}),
    ("gate", "rolling_out", "v3 beats the champion: auc 0.93 vs 0.91", {"auc": 0.93}),
    ("stage", "rolling_out", "canary 10%", {"stage": 1, "mode": "canary", "share": 0.1}),
    ("stage", "rolling_out", "canary 50%", {"stage": 2, "mode": "canary", "share": 0.5}),
    ("promote", "idle", "v3 promoted <script>alert('loop')</script>", {"version": 3}),
)


def fill_loop(store: Any, model: str) -> None:
    """A loop history as the controller writes it: a drift trigger, a retrain, a gate, two
    canary stages and a promotion (whose message holds a script tag)."""
    at = 1_767_916_800_000  # 2026-01-09
    for i, (kind, state, message, evidence) in enumerate(LOOP_STEPS):
        data = {"challenger": 3} if state == "rolling_out" else {}
        store.transition_loop(
            model,
            expected_revision=i,
            state=state,
            data=data,
            kind=kind,
            message=message,
            evidence=evidence,
            now=at + i * 3_600_000,
        )


@dataclass
class UiServer:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_ui(home: Path, *args: str, env_extra: dict[str, str] | None = None) -> UiServer:
    """``modelloop ui`` on a free loopback port over ``home``; waits until it answers."""
    port = free_port()
    env = {**os.environ, "MODELLOOP_HOME": str(home), **(env_extra or {})}
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    log_path = home.parent / f"ui-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelloop", "ui", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = UiServer(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"modelloop ui exited with {proc.returncode}: {log_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(server.url + "/", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"modelloop ui did not answer: {log_path.read_text()}")
        time.sleep(0.2)


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@dataclass
class Watched:
    """A browser page with everything that went wrong on it recorded."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    shots: Path | None = None

    def problems(self) -> list[str]:
        return [*self.console_errors, *self.failed_requests, *(f"dialog {d}" for d in self.dialogs)]

    def shot(self, name: str) -> Path:
        assert self.shots is not None
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def watch(page: Any, shots: Path) -> Watched:
    """Record console errors, failed requests (network failures and HTTP >= 400), and dialogs
    (dismissed) of ``page``."""
    w = Watched(page, shots=shots)
    page.on(
        "console",
        lambda m: (
            w.console_errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: w.console_errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: w.failed_requests.append(f"failed {r.url}: {r.failure}"))

    def on_response(response: Any) -> None:
        if response.status >= 400:
            w.failed_requests.append(f"HTTP {response.status} {response.url}")

    page.on("response", on_response)

    def on_dialog(dialog: Any) -> None:
        w.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return w


def wait_for_charts(page: Any, timeout_ms: float = 30_000) -> None:
    """Wait until every chart of the page has drawn the data it fetched."""
    page.wait_for_load_state("load")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart, #parcoords, .chart-static')]"
        ".every(d => d.getAttribute('data-loaded') === 'true')",
        timeout=timeout_ms,
    )


def launch_browser() -> Iterator[Any]:
    """One headless Chromium for a module; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
