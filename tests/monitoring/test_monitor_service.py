"""Monitoring a registered model end to end: prediction log on disk → drift, quality, live
accuracy → stored results and alerts → CLI, HTML report and a real webhook receiver."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score
from typer.testing import CliRunner

from modelloop import Client, InvalidInput, NotFound, Settings
from modelloop.cli import app
from modelloop.data import FLIGHTS_FEATURES, load_flights
from modelloop.demo import replay_frame, run_quickstart
from modelloop.monitoring import (
    REFERENCE_TAG,
    DriftShareAbove,
    FeatureDrifted,
    MetricBelow,
    run_monitor,
)

MODEL = "flights-delay"
FEATURES = list(FLIGHTS_FEATURES)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("monitor-home")


@pytest.fixture(scope="module")
def mclient(home: Path):
    client = Client(Settings(home=home, user="tester"))
    run_quickstart(client, model_name=MODEL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_HOME", str(home))
    monkeypatch.delenv("MODELLOOP_STORE_URL", raising=False)
    monkeypatch.delenv("MODELLOOP_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MODELLOOP_USER", "tester")


@pytest.fixture(autouse=True)
def _empty_logs_after_each_test(mclient: Client):
    yield
    _clear_logs(mclient)  # also when a test failed half-way, so the next one starts clean


def write_log(client: Client, frame: pd.DataFrame) -> pd.DataFrame:
    """Score ``frame`` with the champion into the prediction log (labels as feedback), the
    way the server lays it out; return the logged rows with their labels."""
    _, logged = replay_frame(
        client, f"{MODEL}@champion", frame[[*FEATURES, "delayed"]], label="delayed", minutes=30
    )
    return logged


def _clear_logs(client: Client) -> None:
    for sub in ("predictions", "feedback"):
        for f in (client.settings.home / sub / MODEL).glob("*.parquet"):
            f.unlink()


def test_version_carries_its_reference_profile(mclient: Client) -> None:
    mv = mclient.resolve(f"models:/{MODEL}@champion")
    assert len(mv.tags[REFERENCE_TAG]) == 64
    train = [d for d in mclient.store.list_run_datasets(mv.run_id) if d.role == "train"]
    assert mv.tags["modelloop.dataset_digest"] == train[0].dataset.digest
    assert len(mv.tags["modelloop.package_digest"]) == 64


def test_drift_live_accuracy_and_alert_lifecycle(mclient: Client) -> None:
    flights = load_flights()
    summer = flights[flights["month"].isin([6, 7])].sample(20_000, random_state=0)
    logged = write_log(mclient, summer)

    rules = [FeatureDrifted("dep_delay"), MetricBelow("accuracy", 0.99), DriftShareAbove(0.9)]
    out = run_monitor(mclient, f"{MODEL}@champion", window="2h", segment="carrier", rules=rules)
    drift = out.result.drift
    assert out.result.window["rows"] == 20_000
    assert "dep_delay" in drift.drifted_columns
    perf = out.result.performance
    assert perf.overall.metrics["accuracy"] == pytest.approx(
        accuracy_score(logged["label"], logged["prediction"])
    )
    # streamed AUC: a score sketch, exact below 8,192 distinct scores (monitoring._auc)
    assert perf.overall.metrics["auc"] == pytest.approx(
        roc_auc_score(logged["label"], logged["proba_1"]), abs=1e-12
    )
    ua = logged[logged["carrier"] == "UA"]
    assert perf.metric("accuracy", carrier="UA") == pytest.approx(
        accuracy_score(ua["label"], ua["prediction"])
    )
    acc_gap = next(g for g in perf.gaps if g.metric == "accuracy")
    big = logged.groupby("carrier").filter(lambda d: len(d) >= 100)
    per_carrier = big.groupby("carrier")[["label", "prediction"]].apply(
        lambda d: accuracy_score(d["label"], d["prediction"])
    )
    assert acc_gap.gap == pytest.approx(per_carrier.max() - per_carrier.min())
    assert perf.metric("accuracy", model_version="1") == pytest.approx(
        perf.overall.metrics["accuracy"]
    )

    stored = mclient.store.list_monitoring_results(MODEL)
    assert stored[-1].result_id == out.record.result_id
    assert stored[-1].num_rows == 20_000 and "dep_delay" in stored[-1].drifted_columns
    assert stored[-1].metrics["accuracy"] == pytest.approx(perf.overall.metrics["accuracy"])
    firing = {a.rule for a in mclient.store.list_alerts(MODEL, firing_only=True)}
    assert firing == {"feature_drifted_dep_delay", "accuracy_below_0.99"}

    # Same condition again: nothing new is announced while it holds.
    again = run_monitor(mclient, MODEL, window="2h", segment="carrier", rules=rules)
    assert again.events == []

    # Data like the training period: drift clears and its alert resolves.
    _clear_logs(mclient)
    early = flights[flights["month"] <= 2].sample(20_000, random_state=1)
    write_log(mclient, early)
    calm = run_monitor(mclient, MODEL, window="2h", rules=rules)
    assert "dep_delay" not in calm.result.drift.drifted_columns
    assert ("feature_drifted_dep_delay", "resolved") in {(e.rule, e.status) for e in calm.events}
    history = [(e.rule, e.status) for e in mclient.store.list_alert_events(MODEL)]
    assert history.count(("feature_drifted_dep_delay", "firing")) == 1
    assert history.index(("feature_drifted_dep_delay", "resolved")) > history.index(
        ("feature_drifted_dep_delay", "firing")
    )
    _clear_logs(mclient)


def test_monitoring_a_data_file_without_labels(mclient: Client, tmp_path: Path) -> None:
    flights = load_flights([12]).sample(5000, random_state=0)
    path = tmp_path / "december.parquet"
    flights[FEATURES].to_parquet(path)
    out = run_monitor(mclient, f"{MODEL}/1", data=path, store_result=False)
    assert out.result.performance is None and out.record is None
    assert out.result.window["rows"] == 5000
    with pytest.raises(NotFound):
        run_monitor(mclient, MODEL, window="2h", data=tmp_path / "missing.parquet")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_cli_run_report_history_alerts_and_webhook(mclient: Client, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "replay", "--months", "7", "--rows", "10000", "--json"])
    assert res.exit_code == 0, res.output
    replayed = json.loads(res.stdout)
    assert replayed["rows"] == 10_000 and Path(replayed["predictions"]).is_file()
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        res = runner.invoke(
            app,
            [
                "monitor",
                "run",
                f"{MODEL}@champion",
                "--window",
                "2h",
                "--json",
                "--alert-feature",
                "distance",
                "--alert-feature",
                "dep_delay",
                "--alert-metric",
                "accuracy<0.999",
                "--webhook",
                url,
            ],
        )
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["rows"] == 10_000 and data["result_id"]
        announced = {e["rule"] for e in data["alerts"]}
        assert "accuracy_below_0.999" in announced
        assert {h["rule"] for h in _Hook.received} == announced
    finally:
        server.shutdown()

    out = tmp_path / "report.html"
    res = runner.invoke(
        app,
        ["monitor", "report", MODEL, "--window", "2h", "--out", str(out), "--segment", "origin"],
    )
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "<script src" not in html and "plotly" in html.lower()
    for feature in FEATURES:
        assert feature in html

    chart = tmp_path / "history.html"
    res = runner.invoke(app, ["monitor", "history", MODEL, "--json", "--out", str(chart)])
    hist = json.loads(res.stdout)
    assert len(hist["results"]) >= 2 and all("payload" not in r for r in hist["results"])
    page = chart.read_text()
    assert "drift share" in page and "accuracy" in page and "<script src" not in page
    alerts = json.loads(runner.invoke(app, ["monitor", "alerts", MODEL, "--json"]).stdout)
    assert "accuracy_below_0.999" in {a["rule"] for a in alerts["alerts"]}
    res = runner.invoke(
        app, ["monitor", "alerts", MODEL, "--resolve", "accuracy_below_0.999", "--json"]
    )
    assert "accuracy_below_0.999" not in {a["rule"] for a in json.loads(res.stdout)["alerts"]}
    last = mclient.store.list_alert_events(MODEL)[-1]
    assert (last.rule, last.status) == ("accuracy_below_0.999", "resolved")
    res = runner.invoke(app, ["monitor", "alerts", MODEL, "--resolve", "no_such_rule"])
    assert res.exit_code == 3 and "no_such_rule" in res.stderr

    res = runner.invoke(
        app,
        ["monitor", "run", MODEL, "--window", "2h", "--every", "soon", "--max-runs", "2", "--json"],
    )
    assert res.exit_code == 2 and "--every" in res.stderr
    before = len(mclient.store.list_monitoring_results(MODEL, limit=1000))
    res = runner.invoke(
        app, ["monitor", "run", MODEL, "--window", "2h", "--every", "1s", "--max-runs", "2"]
    )
    assert res.exit_code == 0, res.output
    assert len(mclient.store.list_monitoring_results(MODEL, limit=1000)) == before + 2
    _clear_logs(mclient)


def test_model_without_reference_is_named(mclient: Client, breast_cancer) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = breast_cancer
    with mclient.start_run("cancer") as run:
        run.log_model(LogisticRegression(max_iter=5000).fit(X, y), input_example=X.head(3))
    mclient.register_model(run.run_id, "cancer-noref")
    with pytest.raises(NotFound, match="no reference profile"):
        run_monitor(mclient, "cancer-noref", data=X)


def test_scheduled_run_exposes_prometheus_gauges(mclient: Client, home: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    write_log(mclient, load_flights([7]).sample(3000, random_state=3))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelloop",
            "monitor",
            "run",
            MODEL,
            "--window",
            "2h",
            "--every",
            "1s",
            "--max-runs",
            "30",
            "--metrics-port",
            str(port),
            "--json",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = ""
        deadline = time.monotonic() + 60
        wanted = ("modelloop_drift_share{", "modelloop_alert_firing{")
        while not all(w in body for w in wanted) and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.2)
        assert f'modelloop_drift_share{{model="{MODEL}"}}' in body
        assert 'modelloop_feature_drifted{feature="dep_delay"' in body
        # alerts that were already firing before this process started are exported too
        assert "modelloop_alert_firing{" in body
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
    _clear_logs(mclient)


def test_outputs_are_reported_apart_and_shadow_rows_have_no_accuracy(mclient: Client) -> None:
    from modelloop.monitoring import append_predictions

    logged = write_log(mclient, load_flights([7]).sample(4000, random_state=5))
    shadow = logged.drop(columns=["label"]).head(1000).copy()
    shadow["route"] = "shadow"
    shadow["prediction"] = 1 - shadow["prediction"]  # a challenger that is always wrong
    append_predictions(mclient.settings.home, MODEL, shadow)
    out = run_monitor(mclient, MODEL, window="2h", store_result=False)
    assert out.result.drift.n_current == 4000  # the shadow copies are not traffic
    assert [c.column for c in out.result.prediction_drift.columns] == ["prediction", "proba_1"]
    assert not {"prediction", "proba_0", "proba_1"} & {c.column for c in out.result.drift.columns}
    assert out.result.performance.overall.n == 4000
    assert out.result.performance.overall.metrics["accuracy"] == pytest.approx(
        accuracy_score(logged["label"], logged["prediction"])
    )
    _clear_logs(mclient)


def test_the_latest_label_correction_wins(mclient: Client) -> None:
    from modelloop.monitoring import append_feedback

    logged = write_log(mclient, load_flights([7]).sample(2000, random_state=6))
    first = run_monitor(mclient, MODEL, window="2h", store_result=False)
    now = pd.Timestamp.now(tz="UTC")
    flipped = pd.DataFrame(
        {"request_id": logged["request_id"], "label": 1 - logged["label"], "timestamp": now}
    )
    stale = pd.DataFrame(
        {
            "request_id": logged["request_id"],
            "label": logged["label"],
            "timestamp": now - pd.Timedelta(hours=1),
        }
    )
    append_feedback(mclient.settings.home, MODEL, flipped)
    append_feedback(mclient.settings.home, MODEL, stale)  # written last, but older
    second = run_monitor(mclient, MODEL, window="2h", store_result=False)
    acc = first.result.performance.overall.metrics["accuracy"]
    assert second.result.performance.overall.metrics["accuracy"] == pytest.approx(1 - acc)
    _clear_logs(mclient)


def test_feedback_dir_is_where_feedback_is_written(tmp_path: Path) -> None:
    from modelloop.monitoring import append_feedback, feedback_dir

    written = append_feedback(tmp_path, MODEL, pd.DataFrame({"request_id": ["r1"], "label": [1]}))
    assert written.parent == feedback_dir(tmp_path, MODEL) == tmp_path / "feedback" / MODEL
    with pytest.raises(InvalidInput, match="model name"):
        feedback_dir(tmp_path, "../elsewhere")  # a name never becomes a path outside the home


def test_a_missing_input_column_is_named(mclient: Client, tmp_path: Path) -> None:
    from modelloop import SchemaMismatch

    data = load_flights([7]).head(500)[FEATURES].drop(columns=["distance"])
    with pytest.raises(SchemaMismatch, match="distance"):
        run_monitor(mclient, MODEL, data=data, store_result=False)


def test_a_scheduled_run_survives_an_empty_window(mclient: Client) -> None:
    write_log(mclient, load_flights([7]).sample(500, random_state=7))
    res = CliRunner().invoke(
        app, ["monitor", "run", MODEL, "--window", "1s", "--every", "1s", "--max-runs", "2"]
    )
    assert res.exit_code == 0, res.output
    assert res.stderr.count("skipped") == 2
    once = CliRunner().invoke(app, ["monitor", "run", MODEL, "--window", "1s"])
    assert once.exit_code == 3 and "no rows" in once.stderr
    _clear_logs(mclient)


def test_regression_model_gets_mae_and_rmse(home: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    client = Client(Settings(home=tmp_path / "reg", user="tester"))
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(X[:300], y[:300])
    with client.start_run("diabetes") as run:
        run.log_model(model, "model", input_example=X.head(3))
    client.register_model(run.run_id, "diabetes", reference_data=X[:300])
    current = X[300:].assign(target=y[300:])
    _, logged = replay_frame(client, "diabetes/1", current, label="target")
    out = run_monitor(client, "diabetes", window="2h", store_result=False)
    metrics = out.result.performance.overall.metrics
    truth, pred = logged["label"], logged["prediction"]
    assert metrics["mae"] == pytest.approx(mean_absolute_error(truth, pred))
    assert metrics["rmse"] == pytest.approx(mean_squared_error(truth, pred) ** 0.5)
    assert [c.column for c in out.result.prediction_drift.columns] == ["prediction"]
    client.close()


def _scored(mclient: Client, n: int, seed: int) -> pd.DataFrame:
    """Flights scored by the champion, with request ids, as a DataFrame (not logged)."""
    flights = load_flights([7]).sample(n, random_state=seed)
    model = mclient.load_model(f"models:/{MODEL}@champion")
    proba = model.predict_proba(flights[FEATURES])
    return (
        flights[FEATURES]
        .reset_index(drop=True)
        .assign(
            request_id=[f"r{i}" for i in range(n)],
            prediction=(proba[:, 1] >= 0.5).astype("int64"),
            proba_1=proba[:, 1],
            truth=flights["delayed"].to_numpy(),
            timestamp=pd.Timestamp("2020-01-01", tz="UTC"),  # far outside any window
        )
    )


def test_frames_are_taken_whole_and_corrections_without_time_win_by_order(mclient):
    data = _scored(mclient, 1500, seed=8)
    wrong = pd.DataFrame({"request_id": data.request_id, "label": 1 - data.truth})
    right = pd.DataFrame({"request_id": data.request_id, "label": data.truth})
    labels = pd.concat([wrong, right], ignore_index=True)  # the correction comes last
    out = run_monitor(
        mclient, MODEL, data=data.drop(columns="truth"), labels=labels, store_result=False
    )
    perf = out.result.performance
    assert out.result.window["rows"] == perf.overall.n == 1500  # same rows in both passes
    assert perf.overall.metrics["accuracy"] == pytest.approx(
        accuracy_score(data.truth, data.prediction)
    )


def test_pending_labels_leave_drift_monitoring_on(mclient: Client) -> None:
    data = _scored(mclient, 500, seed=9)
    pending = pd.DataFrame({"request_id": data.request_id, "label": [None] * 500})
    out = run_monitor(mclient, MODEL, data=data.drop(columns="truth"), labels=pending)
    assert out.result.performance is None and out.record is not None


def test_odd_segment_names_are_quoted_and_glob_paths_refused(mclient, tmp_path) -> None:
    data = _scored(mclient, 800, seed=10).rename(columns={"truth": "label"})
    data['car"rier'] = data["carrier"]
    out = run_monitor(mclient, MODEL, data=data, segment='car"rier', store_result=False)
    ua = data[data["carrier"] == "UA"]
    assert out.result.performance.metric("accuracy", **{'car"rier': "UA"}) == pytest.approx(
        accuracy_score(ua.label, ua.prediction)
    )
    with pytest.raises(InvalidInput, match="segment"):
        run_monitor(mclient, MODEL, data=data, segment="nope", store_result=False)
    odd = tmp_path / "logs[1]"
    odd.mkdir()
    data.drop(columns=['car"rier']).to_parquet(odd / "x.parquet")
    with pytest.raises(InvalidInput, match="glob"):
        run_monitor(mclient, MODEL, data=odd / "x.parquet", store_result=False)
