"""Every dashboard page over a store filled the real way: the flights pipeline run by the CLI
(trained, gated, registered as champion), served by a real ``modelloop serve`` under a short
bounded load with labels fed back, monitored by ``modelloop monitor run`` (segments, quality,
a firing alert), and a loop retrain requested by ``modelloop loop retrain``. Each page is loaded
in Chromium with no console error and no failed request, its key numbers are checked against
the store and the serving history, and a screenshot of it is written for review."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ui_support import UiServer, Watched, start_ui, wait_for_charts

from serving.serving_support import start_server

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flights" / "modelloop.yaml"
MODEL = "flights-delay"
#: the quick form of the example pipeline used by the pipeline tests (no tuning, no explaining)
QUICK = (
    "data.args.sample=3000",
    "model.params.max_iter=30",
    "explain.enabled=false",
    "gates.2=segment_gap <= 0.5",
    "tune.enabled=false",
)
#: served rows (March flights, after the training months), in requests of BATCH rows
SERVED_ROWS = 240
BATCH = 8
LOOP_POLICY = """\
loop:
  every: 1m
  cooldown: 1h
  triggers: {drift_share: 0.5}
  training: {source: log, window: 1d, min_labelled_rows: 200}
  gate: {metric: accuracy, window: 1d, min_rows: 100, tolerance: 0.05}
  rollout:
    canary: {steps: [0.3, 0.6], min_duration: 1s, max_duration: 10m, min_outcomes: 60}
"""
RETRAIN_REASON = "asked by <b>the dashboard test</b>"


@dataclass
class FullStore:
    home: Path
    pipeline: dict[str, Any]
    monitor: dict[str, Any]
    served_requests: int
    labelled: int
    timings: dict[str, float] = field(default_factory=dict)


def _cli(home: Path, *args: str, timeout: float = 240) -> str:
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"modelloop {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done.stdout


def _serve_and_label(home: Path) -> tuple[int, int]:
    """``modelloop serve`` the champion, send March flights in small requests and label every
    answer through the feedback route; returns (requests answered, rows labelled)."""
    import httpx

    from modelloop.data import FLIGHTS_FEATURES, load_flights

    march = load_flights([3]).sample(SERVED_ROWS, random_state=0).reset_index(drop=True)
    features = march[list(FLIGHTS_FEATURES)]
    server = start_server(home, [f"{MODEL}@champion"], "--ops-interval", "0.25")
    requests = labelled = 0
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for start in range(0, SERVED_ROWS, BATCH):
                part = features.iloc[start : start + BATCH]
                records = json.loads(part.to_json(orient="records", date_format="iso"))
                r = http.post(f"/v1/models/{MODEL}/predict", json={"records": records})
                assert r.status_code == 200, r.text
                requests += 1
                rid = r.json()["request_id"]
                ids = [rid] if len(part) == 1 else [f"{rid}/{i}" for i in range(len(part))]
                labels = [
                    {"request_id": i, "label": int(v)}
                    for i, v in zip(ids, march["delayed"].iloc[start : start + BATCH], strict=True)
                ]
                f = http.post(f"/v1/models/{MODEL}/feedback", json={"labels": labels})
                assert f.status_code == 200, f.text
                labelled += len(labels)
            time.sleep(0.6)  # a couple of closed intervals after the last request
    finally:
        assert server.terminate() == 0, server.log()[-3000:]  # flushes the logs and the history
    return requests, labelled


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> FullStore:
    home = tmp_path_factory.mktemp("fullstore") / "home"
    timings: dict[str, float] = {}
    t = time.monotonic()
    sets = [a for s in QUICK for a in ("--set", s)]
    pipeline = json.loads(_cli(home, "pipeline", "run", str(EXAMPLE), *sets, "--json"))
    assert pipeline["status"] == "registered", pipeline
    timings["pipeline"] = time.monotonic() - t
    t = time.monotonic()
    requests, labelled = _serve_and_label(home)
    timings["serve"] = time.monotonic() - t
    t = time.monotonic()
    monitor = json.loads(
        _cli(
            home, "monitor", "run", MODEL, "--window", "1000rows", "--segment", "carrier",
            "--alert-metric", "accuracy<1.01", "--json",
        )
    )  # fmt: skip
    timings["monitor"] = time.monotonic() - t
    policy = home.parent / "policy.yaml"
    policy.write_text(LOOP_POLICY)
    _cli(home, "loop", "retrain", str(EXAMPLE), "--policy", str(policy), "--reason", RETRAIN_REASON)
    return FullStore(home, pipeline, monitor, requests, labelled, timings)


@pytest.fixture(scope="module")
def full_ui(full: FullStore) -> Iterator[UiServer]:
    server = start_ui(full.home)
    try:
        yield server
    finally:
        server.stop()


def _store(full: FullStore) -> Any:
    from modelloop._client import Client
    from modelloop._config import Settings

    return Client(Settings(home=full.home))


def _ints(texts: list[str]) -> list[int]:
    return [int(t.replace(",", "")) for t in texts]


def test_every_page_of_a_really_filled_store(
    full: FullStore, full_ui: UiServer, watched: Watched
) -> None:
    from modelloop.aiops import read_ops_history

    client = _store(full)
    try:
        store = client.store
        experiment = store.get_experiment_by_name(full.pipeline["experiment"])
        runs = store.search_runs([experiment.experiment_id], max_results=200).items
        model = store.get_registered_model(MODEL)
        versions = store.list_model_versions(MODEL)
        records = store.list_monitoring_results(MODEL)
        alerts = store.list_alerts(MODEL)
        loop_events = store.list_loop_events(MODEL)
        alias_events = [e for e in store.list_audit_events(model=MODEL) if e.action == "alias.set"]
    finally:
        client.close()
    ops = read_ops_history(MODEL, home=full.home)
    assert len(records) == 1 and alerts and loop_events and alias_events  # a real story
    result = records[0]
    page = watched.page
    ui = full_ui.url

    def visit(name: str, path: str) -> None:
        response = page.goto(ui + path)
        assert response is not None and response.status == 200, name
        wait_for_charts(page)
        assert watched.shot(name).stat().st_size > 5000

    visit("experiments", "/")
    names = page.locator("#experiments tbody tr td:nth-child(2)").all_inner_texts()
    assert names == [e.name for e in client_experiments(full)]

    visit("runs", f"/experiments/{experiment.experiment_id}?n=200")
    shown = page.locator("#runs tbody tr[data-run-id]").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-run-id'))"
    )
    assert shown == [r.run_id for r in runs]  # the pipeline's run and its step runs
    runs_by_id = {r.run_id: r for r in runs}

    visit("run", f"/runs/{full.pipeline['run_id']}")
    assert page.locator("#run-name").inner_text() == runs_by_id[full.pipeline["run_id"]].name

    train_run = versions[-1].run_id
    assert train_run is not None
    visit("run-with-model", f"/runs/{train_run}")
    assert page.locator("a", has_text=f"{MODEL} v{versions[-1].version}").count() >= 1

    step_runs = [r.run_id for r in runs[:3]]
    visit("compare", "/compare?" + "&".join(f"run={r}" for r in step_runs))

    visit("models", "/models")
    row = page.locator("#models tbody tr").first
    assert row.locator("td").nth(1).inner_text() == str(model.latest_version)
    assert f"champion → v{model.aliases['champion']}" in row.inner_text()

    visit("model", f"/models/{MODEL}")
    assert page.locator("#versions tbody tr").count() == len(versions)
    lineage = page.locator(f"#versions tr[data-version='{versions[-1].version}']").inner_text()
    assert "train" in lineage  # run → dataset → version
    pipeline_link = page.locator(
        f"#versions tr[data-version='{versions[-1].version}'] a.pipeline-run"
    )
    href = pipeline_link.get_attribute("href") or ""
    assert href.endswith(f"/runs/{full.pipeline['run_id']}")  # pipeline run → version
    history = page.locator("#alias-history tbody tr")
    assert history.count() == len(alias_events)
    assert "champion" in history.first.inner_text()

    visit("monitoring", f"/models/{MODEL}/monitoring")
    assert page.locator("#results tbody tr").count() == 1
    rows_shown = _ints(page.locator("#results tbody td:nth-child(3)").all_inner_texts())
    assert rows_shown == [result.num_rows] and result.num_rows == full.labelled
    firing = [a for a in alerts if a.firing]
    assert page.locator("#summary-firing").inner_text().startswith(f"{len(firing)} alert")
    spans = page.evaluate("() => document.getElementById('alert-timeline').data.map(t => t.y[0])")
    assert sorted(spans) == sorted(a.rule for a in firing) and spans  # still firing: open span
    segments = result.payload["performance"]["rows"]
    carriers = sorted(r["group"]["carrier"] for r in segments if list(r["group"]) == ["carrier"])
    shown_segments = page.locator("#segments tbody tr").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-segment'))"
    )
    assert shown_segments == carriers and len(carriers) > 1
    traces = page.evaluate(
        "() => document.getElementById('segment-accuracy').data.map(t => t.name)"
    )
    assert sorted(traces) == carriers
    quality_columns = page.locator("#quality tbody tr").count()
    assert quality_columns == len(result.payload["quality"]["columns"])
    requests = page.evaluate(
        "() => document.getElementById('serving-volume').data[0].y.reduce((a, b) => a + b, 0)"
    )
    assert requests == int(ops["requests"].sum()) == full.served_requests
    p95 = page.evaluate("() => document.getElementById('serving-latency').data[1].y")
    assert len(p95) == len(ops) and any(v is not None and v > 0 for v in p95)

    visit("loop", f"/models/{MODEL}/loop")
    kinds = page.locator("#loop-events tbody td:nth-child(2)").all_inner_texts()
    assert kinds == [e.kind for e in reversed(loop_events)]
    assert RETRAIN_REASON in page.locator("#loop-events").inner_text()  # as text, not markup
    shots = sorted(p.name for p in watched.shots.iterdir())  # type: ignore[union-attr]
    assert len(shots) == 9


def client_experiments(full: FullStore) -> list[Any]:
    client = _store(full)
    try:
        return list(client.store.list_experiments())
    finally:
        client.close()
