"""Every dashboard page, loaded in real Chromium from a real ``modelloop ui`` process over a
store filled by real tracking and registry calls: no console error, no failed request, a
screenshot of each, and the facts on the page checked against the store."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ui_support import (
    EXPERIMENT,
    LOOP_STEPS,
    Filled,
    UiServer,
    Watched,
    fill_store,
    wait_for_charts,
)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """The shared store of the dashboard tests, with v2 of the model converted to ONNX."""
    return fill_store(tmp_path_factory.mktemp("uistore") / "home", onnx=True)


def _client(filled: Filled) -> Any:
    from modelloop._client import Client
    from modelloop._config import Settings

    return Client(Settings(home=filled.home))


def test_every_page_loads_cleanly_with_a_screenshot(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    page = watched.page
    pages = {
        "experiments": "/",
        "runs": f"/experiments/{filled.experiment_id}",
        "run": f"/runs/{filled.model_run}",
        "compare": f"/compare?run={filled.sweep_runs[0]}&run={filled.sweep_runs[1]}"
        f"&run={filled.model_run}",
        "models": "/models",
        "model": "/models/cancer",
        "monitoring": "/models/cancer/monitoring",
        "loop": "/models/cancer/loop",
    }
    for name, path in pages.items():
        response = page.goto(ui.url + path)
        assert response is not None and response.status == 200, name
        wait_for_charts(page)
        for chart in page.locator(".chart, #parcoords").all():  # charts drew their data
            assert chart.get_attribute("data-loaded") == "true", name
        shot = watched.shot(name)
        assert shot.stat().st_size > 5000
    assert sorted(p.name for p in watched.shots.iterdir()) == sorted(  # type: ignore[union-attr]
        f"{n}.png" for n in pages
    )


def test_experiments_and_models_list_what_the_store_holds(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    page = watched.page
    page.goto(ui.url + "/")
    assert page.locator("#experiments tbody tr td:nth-child(2)").all_inner_texts() == [EXPERIMENT]
    page.click(f"text={EXPERIMENT}")
    page.wait_for_url(re.compile(rf"/experiments/{filled.experiment_id}$"))
    page.click("header >> text=Models")
    rows = page.locator("#models tbody tr")
    assert rows.count() == 1
    assert rows.first.locator("td").nth(1).inner_text() == "2"
    assert "champion → v2" in rows.first.inner_text()
    assert "challenger → v1" in rows.first.inner_text()


def test_run_page_shows_params_dataset_model_signature_and_charts(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    client = _client(filled)
    try:
        run = client.get_run(filled.model_run)
        history = client.get_metric_history(filled.model_run, "auc")
        signature_inputs = [
            c["name"]
            for c in __import__("json").loads(
                (client.download_artifacts(run.run_id, "model/signature.json")).read_text()
            )["inputs"]
        ]
    finally:
        client.close()
    page = watched.page
    page.goto(f"{ui.url}/runs/{filled.model_run}")
    wait_for_charts(page)
    assert page.locator("#run-name").inner_text() == run.name
    params = dict(
        zip(
            page.locator("#params tbody td:nth-child(1)").all_inner_texts(),
            page.locator("#params tbody td:nth-child(2)").all_inner_texts(),
            strict=True,
        )
    )
    assert params == dict(run.params)
    assert page.locator("#datasets tbody td").nth(1).inner_text() == "cancer-train"
    assert page.locator(".signature tbody td:nth-child(1)").all_inner_texts() == signature_inputs
    assert "LogisticRegression" in page.locator(".model-meta").inner_text()
    # the auc chart holds the logged curve (25 points: below the downsampling threshold)
    chart = page.locator('.chart[data-metric="auc"]')
    assert chart.get_attribute("data-loaded") == "true"
    ys = page.evaluate("() => document.querySelector('.chart[data-metric=\"auc\"]').data[0].y")
    assert ys == [m.value for m in history]
    page.check("#log-scale")
    axis = page.evaluate(
        "() => document.querySelector('.chart[data-metric=\"auc\"]').layout.yaxis.type"
    )
    assert axis == "log"


def test_artifact_download_gives_the_stored_bytes(
    ui: UiServer, filled: Filled, watched: Watched, tmp_path: Path
) -> None:
    client = _client(filled)
    try:
        expected = client.download_artifacts(filled.model_run, "model/metadata.json").read_bytes()
    finally:
        client.close()
    page = watched.page
    page.goto(f"{ui.url}/runs/{filled.model_run}")
    with page.expect_download() as info:
        page.click("#artifacts >> text=model/metadata.json")
    download = info.value
    assert download.suggested_filename == "metadata.json"
    target = tmp_path / "got.json"
    download.save_as(str(target))
    assert target.read_bytes() == expected


def test_model_page_shows_versions_lineage_and_who_moved_aliases(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    client = _client(filled)
    try:
        events = [
            e for e in client.store.list_audit_events(model="cancer") if e.action == "alias.set"
        ]
        versions = client.list_model_versions("cancer")
        datasets = client.store.list_run_datasets(versions[0].run_id)
        onnx = json.loads(client.artifacts.read_bytes(versions[1].tags["modelloop.onnx"]))
    finally:
        client.close()
    page = watched.page
    page.goto(f"{ui.url}/models/cancer")
    assert page.locator("#versions tbody tr").count() == len(versions) == 2
    v1 = page.locator('#versions tr[data-version="1"]')
    assert "challenger" in v1.locator("td").nth(1).inner_text()
    assert datasets[0].dataset.digest[:12] in v1.locator("td").nth(3).inner_text()
    history = page.locator("#alias-history tbody tr")
    assert history.count() == len(events) == 3
    newest = history.first.locator("td").all_inner_texts()
    assert newest[1:] == ["ada", "moved", "challenger", "—", "v1", "this machine"]
    moved = history.nth(1).locator("td").all_inner_texts()
    assert moved[1:] == ["ada", "moved", "champion", "v1", "v2", "this machine"]
    v2_onnx = page.locator('#versions tr[data-version="2"] td.onnx').inner_text()
    assert v2_onnx.startswith("yes, sha256 " + onnx["onnx_sha256"][:12])
    assert f"checked on {onnx['check_rows']} rows" in v2_onnx and "onnxruntime" in v2_onnx
    assert v1.locator("td.onnx").inner_text() == "—"
    page.click('#versions tr[data-version="2"] >> text=train-C1.0')
    page.wait_for_url(re.compile(rf"/runs/{versions[1].run_id}$"))


def test_unknown_things_get_an_error_page_naming_them(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    page = watched.page
    response = page.goto(f"{ui.url}/runs/{'0' * 32}")
    assert response is not None and response.status == 404
    assert "0" * 32 in page.locator("#error-message").inner_text()
    response = page.goto(f"{ui.url}/compare?run={filled.model_run}")
    assert response is not None and response.status == 400
    assert "2 to 20 runs" in page.locator("#error-message").inner_text()
    response = page.goto(f"{ui.url}/runs/{filled.model_run}/artifacts/..%2F..%2Fstore.db")
    assert response is not None and response.status == 400
    assert "'..'" in page.locator("#error-message").inner_text()
    assert all(" 40" in f for f in watched.failed_requests)
    assert len(watched.failed_requests) == 3
    # the browser logs each refused page load once; nothing else went wrong
    assert len(watched.console_errors) == 3
    assert all("Failed to load resource" in e for e in watched.console_errors)
    watched.failed_requests.clear()
    watched.console_errors.clear()


def test_monitoring_page_shows_drift_over_time_and_alerts(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    client = _client(filled)
    try:
        records = client.store.list_monitoring_results("cancer")
        alerts = client.store.list_alerts("cancer")
        events = client.store.list_alert_events("cancer")
    finally:
        client.close()
    assert [e.status for e in events] == ["firing", "resolved"]  # the store holds a real story
    page = watched.page
    page.goto(f"{ui.url}/models/cancer")
    page.click("#monitoring-link")
    page.wait_for_url("**/models/cancer/monitoring")
    wait_for_charts(page)
    assert page.locator("#results tbody tr").count() == len(records)
    share = page.evaluate("() => document.getElementById('drift-share').data[0].y")
    assert share == [r.share_drifted for r in records]
    heat = page.evaluate(
        "() => { const d = document.getElementById('feature-drift').data[0];"
        " return [d.y, d.z.map(r => r.length)]; }"
    )
    columns = sorted(c["column"] for c in records[-1].payload["drift"]["columns"])
    assert heat[0] == columns and heat[1] == [len(records)] * len(columns)
    drifted_marks = page.evaluate("() => document.getElementById('feature-drift').data[1].x.length")
    assert drifted_marks == sum(len(r.drifted_columns) for r in records) > 0
    assert page.locator("#alerts tbody tr").count() == len(alerts) == 1
    assert page.locator("#alerts tbody td").nth(1).inner_text() == "resolved"
    statuses = page.locator("#alert-events tbody td:nth-child(3)").all_inner_texts()
    assert statuses == ["resolved", "firing"]  # newest first
    span = page.evaluate("() => document.getElementById('alert-timeline').data.map(t => t.x)")
    iso = [
        dt.datetime.fromtimestamp(e.timestamp / 1000, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
        for e in events
    ]
    assert span == [iso]  # one firing span, from the firing event to the resolving one
    watched.shot("monitoring-from-link")


def test_loop_page_shows_the_timeline_and_canary_share(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    client = _client(filled)
    try:
        state = client.store.get_loop_state("cancer")
        events = client.store.list_loop_events("cancer")
    finally:
        client.close()
    assert state is not None and len(events) == len(LOOP_STEPS)
    page = watched.page
    page.goto(f"{ui.url}/models/cancer")
    page.click("#loop-link")
    page.wait_for_url("**/models/cancer/loop")
    wait_for_charts(page)
    assert page.locator("#loop-state-name").inner_text() == state.state == "idle"
    kinds = page.locator("#loop-events tbody td:nth-child(2)").all_inner_texts()
    assert kinds == [e.kind for e in reversed(events)]
    messages = page.locator("#loop-events td.message").all_inner_texts()
    assert messages[0] == LOOP_STEPS[-1][2]  # the script tag is shown as text
    assert page.locator("main script:not([type])").count() == 0
    shares = page.evaluate("() => document.getElementById('canary-share').data[0].y")
    assert shares == [0.1, 0.5, 0.0]  # two canary stages, then the promotion ends the canary
    page.click("#loop-events tbody tr:first-child summary")
    evidence = page.locator("#loop-events tbody tr:first-child pre").inner_text()
    assert '"version": 3' in evidence


def test_monitoring_page_of_a_model_without_any_data_says_so(
    ui: UiServer, watched: Watched
) -> None:
    page = watched.page
    response = page.goto(f"{ui.url}/models/never-served/monitoring")
    assert response is not None and response.status == 200
    for empty in ("alerts", "drift", "live", "quality", "serving"):
        assert page.locator(f"#{empty}-empty").is_visible(), empty
    assert "no serving history yet" in page.locator("#serving-empty").inner_text().lower()
    assert page.locator("#summary-firing").inner_text() == "0 alerts firing"
    assert page.locator(".chart-static").count() == 0
