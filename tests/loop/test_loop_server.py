"""The loop against a real ``modelloop serve`` process, driven by the real ``modelloop loop``
command: traffic and labels over HTTP, routing through the server's admin API, crashes by
SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from loop_support import MODEL, PIPELINE, breast_cancer

from serving.serving_support import post_many, read_parquets, start_server

pytestmark = pytest.mark.slow

LOOP = """\
loop:
  every: 1s
  cooldown: 1h
  triggers: {drift_share: 0.5}
  training: {source: log, window: 1d, min_labelled_rows: 200}
  gate: {metric: accuracy, window: 1d, min_rows: 100, tolerance: 0.05}
  rollout:
    canary: {steps: [0.3, 0.6], min_duration: 1s, max_duration: 10m, min_outcomes: 60}
  judge: {margin: 0.15, max_p99_latency_ratio: 20, max_error_rate: 0.05}
"""


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _send(server: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """One request per row; then every label as feedback. The answers, with their labels."""
    features = [c for c in frame.columns if c != "target"]
    bodies = [{"records": [r]} for r in frame[features].to_dict(orient="records")]
    replies = post_many(f"{server.url}/v1/models/{MODEL}/predict", bodies, concurrency=8)
    assert all(r.status_code == 200 for r in replies), replies[0].text
    answers = pd.DataFrame([r.json() for r in replies])
    answers["label"] = frame["target"].to_numpy()
    labels = [
        {"request_id": rid, "label": int(y)}
        for rid, y in zip(answers["request_id"], answers["label"], strict=True)
    ]
    for i in range(0, len(labels), 200):
        (reply,) = post_many(
            f"{server.url}/v1/models/{MODEL}/feedback", [{"labels": labels[i : i + 200]}]
        )
        assert reply.status_code == 200, reply.text
    return answers


def _wait_logged(home: Path, rows: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folder = home / "predictions" / MODEL
        if folder.is_dir() and len(read_parquets(folder)) >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {rows} rows logged after {timeout} s")


def _loop(home: Path, pipeline: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    cmd = [sys.executable, "-m", "modelloop", "loop", *args]
    if args[0] in ("tick", "run", "retrain"):
        cmd.insert(5, str(pipeline))
    done = subprocess.run(
        cmd,
        env={**os.environ, "MODELLOOP_HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done


def _tick(home: Path, pipeline: Path, server_url: str, **kw: Any) -> dict[str, Any]:
    done = _loop(home, pipeline, "tick", "--server", server_url, "--json", **kw)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def setup(client: Any, tmp_path: Path) -> dict[str, Any]:
    """Champion v1 served by a real server; 500 drifted rows served and labelled over HTTP; a
    stored monitoring run that finds the drift."""
    from modelloop.monitoring import run_monitor
    from modelloop.pipeline import Pipeline

    home = Path(client.settings.home)
    frame = breast_cancer()
    frame.iloc[:400].to_csv(tmp_path / "train.csv", index=False)
    pipeline = tmp_path / "modelloop.yaml"
    pipeline.write_text(PIPELINE + LOOP)
    assert Pipeline.from_file(pipeline).run(client).registered_version == 1
    features = [c for c in frame.columns if c != "target"]
    drifted = frame.sample(1500, replace=True, random_state=1).reset_index(drop=True)
    rng = np.random.default_rng(0)
    drifted[features] = drifted[features] * 1.4 + rng.normal(0, 0.01, (1500, len(features)))
    server = start_server(home, [f"{MODEL}@champion"], "--reload-interval", "1")
    _send(server, drifted.iloc[:500])
    _wait_logged(home, 500)
    record = run_monitor(client, MODEL, window="1d").record
    assert record is not None and (record.share_drifted or 0) >= 0.5
    world = {"home": home, "pipeline": pipeline, "server": server, "drifted": drifted}
    yield world
    world["server"].terminate()  # the server a test restarted, if it did
    server.terminate()


def test_drift_to_promotion_through_the_server_and_a_server_outage(setup, client) -> None:  # type: ignore[no-untyped-def]
    home, pipeline, server, drifted = (setup[k] for k in ("home", "pipeline", "server", "drifted"))
    first = _tick(home, pipeline, server.url)
    assert first["state"] == "rollout", json.dumps(first)[:3000]
    assert [e["kind"] for e in first["events"]] == ["trigger", "retrain", "stage"]
    routing = _get(f"{server.url}/v1/models/{MODEL}")
    assert routing["mode"] == "canary" and routing["share"] == 0.3
    assert routing["challenger"]["version"] == 2 and routing["champion"]["version"] == 1

    answers = _send(server, drifted.iloc[500:900])
    served_by = answers.groupby("route")["model_version"].unique().to_dict()
    assert set(served_by) == {"champion", "canary"}
    assert list(served_by["canary"]) == [2] and list(served_by["champion"]) == [1]
    _wait_logged(home, 900)

    # the server goes down: the step waits, says so, and promotes nothing
    server.terminate()
    down = _tick(home, pipeline, server.url)
    assert down["state"] == "rollout" and down["events"], json.dumps(down)
    assert down["events"][0]["kind"] == "wait"
    assert "failed" in down["events"][0]["message"]
    assert client.store.get_version_by_alias(MODEL, "champion").version == 1

    # back up (a new process, routing forgotten): the loop restores it and goes on
    server = setup["server"] = start_server(home, [f"{MODEL}@champion"], "--reload-interval", "1")
    _tick(home, pipeline, server.url)
    kinds = [e.kind for e in client.store.list_loop_events(MODEL)]
    assert "routing" in kinds
    assert _get(f"{server.url}/v1/models/{MODEL}")["mode"] == "canary"

    for part in (slice(900, 1200), slice(1200, 1500)):
        _send(server, drifted.iloc[part])
        _wait_logged(home, part.stop)
        time.sleep(1.1)
        _tick(home, pipeline, server.url)
    state = client.store.get_loop_state(MODEL)
    assert state is not None and state.state == "promoted", [
        (e.kind, e.message) for e in client.store.list_loop_events(MODEL)
    ]
    assert client.store.get_version_by_alias(MODEL, "champion").version == 2
    deadline = time.monotonic() + 20
    while _get(f"{server.url}/v1/models/{MODEL}")["champion"]["version"] != 2:
        assert time.monotonic() < deadline, "the server never followed the promotion"
        time.sleep(0.2)
    assert _get(f"{server.url}/v1/models/{MODEL}")["mode"] == "off"
    judged = [e for e in client.store.list_loop_events(MODEL) if e.kind in ("stage", "judge")]
    verdict = judged[-1].evidence["judge"]
    assert verdict["outcome"] == "pass" and verdict["n_challenger"] >= 60
    assert verdict["guards"]["p99_latency_ms"]["challenger"] is not None
    history = _loop(home, pipeline, "history", MODEL, "--json")
    events = json.loads(history.stdout)["events"]
    assert [e["kind"] for e in events][-1] == "promote"
    status = json.loads(_loop(home, pipeline, "status", MODEL, "--json").stdout)
    assert status["loops"][0]["state"] == "promoted" and status["loops"][0]["model"] == MODEL


@pytest.mark.parametrize("fault", ["rollout", "promoted"])
def test_killed_between_an_effect_and_its_event_finishes_once(setup, client, fault) -> None:  # type: ignore[no-untyped-def]
    """``rollout``: killed mid-canary, after the server got step 2's routing and before the step
    was recorded; ``promoted``: after ``champion`` moved and before the promotion was recorded."""
    home, pipeline, server, drifted = (setup[k] for k in ("home", "pipeline", "server", "drifted"))
    assert _tick(home, pipeline, server.url)["state"] == "rollout"
    env = {"MODELLOOP_LOOP_FAULT": f"after-effect:{fault}"}
    killed = None
    for part in (slice(500, 900), slice(900, 1300)):
        _send(server, drifted.iloc[part])
        _wait_logged(home, part.stop)
        time.sleep(1.1)
        done = _loop(home, pipeline, "tick", "--server", server.url, env=env)
        if done.returncode == -signal.SIGKILL:
            killed = client.store.get_loop_state(MODEL)
            break
        assert done.returncode == 0, done.stderr
    assert killed is not None, "the fault never fired"
    if fault == "promoted":
        assert killed.state == "promoting"
        assert client.store.get_version_by_alias(MODEL, "champion").version == 2  # unrecorded
    else:
        assert killed.state == "rollout" and killed.data["stage"] == 0
        assert _get(f"{server.url}/v1/models/{MODEL}")["share"] == 0.6  # applied, unrecorded
    _expire_lease(client)  # the killed controller never gave its lease back
    resumed = _tick(home, pipeline, server.url)
    if resumed["state"] != "promoted":  # killed mid-canary: step 2 still needs its outcomes
        logged = len(read_parquets(home / "predictions" / MODEL))
        _send(server, drifted.iloc[1300:1500])
        _wait_logged(home, logged + 200)
        time.sleep(1.1)
        resumed = _tick(home, pipeline, server.url)
    assert resumed["state"] == "promoted", resumed
    kinds = [e.kind for e in client.store.list_loop_events(MODEL)]
    assert kinds.count("promote") == 1 and kinds.count("retrain") == 1
    assert kinds.count("stage") == 2  # step 1, step 2: each recorded once
    assert len(client.store.list_model_versions(MODEL)) == 2


def test_a_bad_challenger_serves_a_bounded_share_and_is_rolled_back(setup, client) -> None:  # type: ignore[no-untyped-def]
    home, pipeline, server, drifted = (setup[k] for k in ("home", "pipeline", "server", "drifted"))
    # the labelled rows it will be trained on carry shuffled labels; the loop's own gate is off
    for f in (home / "feedback" / MODEL).glob("*.parquet"):
        labels = pd.read_parquet(f)
        labels["label"] = np.random.default_rng(5).permutation(labels["label"].to_numpy())
        labels.to_parquet(f, index=False)
    pipeline.write_text(pipeline.read_text().replace("min_rows: 100", "min_rows: 1000000000"))
    assert _tick(home, pipeline, server.url)["state"] == "rollout"
    # traffic the champion knows well (undrifted): a challenger trained on noise is far worse
    plain = breast_cancer().sample(400, replace=True, random_state=7).reset_index(drop=True)
    answers = _send(server, plain)
    by_challenger = int((answers["route"] == "canary").sum())
    _wait_logged(home, 900)
    time.sleep(1.1)
    ended = _tick(home, pipeline, server.url)
    assert ended["state"] == "rolled_back", ended
    judge = next(e for e in ended["events"] if e["kind"] == "judge")
    assert judge["evidence"]["judge"]["outcome"] == "fail"
    # at most the first step's share of the step's traffic, with binomial slack (share 0.3)
    assert 0 < by_challenger <= 0.3 * 400 + 3 * (400 * 0.3 * 0.7) ** 0.5
    after = _send(server, drifted.iloc[900:1000])
    assert set(after["route"]) == {"champion"} and set(after["model_version"]) == {1}
    assert _get(f"{server.url}/v1/models/{MODEL}")["challenger"] is None


def test_killed_while_retraining_resumes_with_one_new_version(setup, client) -> None:  # type: ignore[no-untyped-def]
    home, pipeline, server = setup["home"], setup["pipeline"], setup["server"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelloop", "loop", "tick", str(pipeline), "--server", server.url],
        env={**os.environ, "MODELLOOP_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        state = client.store.get_loop_state(MODEL)
        if state is not None and state.state == "retraining":
            break
        assert time.monotonic() < deadline and proc.poll() is None, "never saw it retraining"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # the lease of the dead controller holds until it expires: a new controller says so
    blocked = _loop(home, pipeline, "tick", "--server", server.url, "--json")
    assert "held by" in json.loads(blocked.stdout)["message"]
    _expire_lease(client)
    resumed = _tick(home, pipeline, server.url)
    assert resumed["state"] == "rollout"
    versions = client.store.list_model_versions(MODEL)
    assert len(versions) == 2  # one retrain, whether the killed one had registered or not
    assert [e.kind for e in client.store.list_loop_events(MODEL)].count("trigger") == 1


def _expire_lease(client: Any) -> None:
    """Stand in for the wait until the dead controller's lease expires (60 s at least): a probe
    takes the lease as of a time past its expiry, then gives it up."""
    probe = client.store.acquire_loop_lease(MODEL, "probe", ttl_ms=1, now=2**50)
    assert probe.holder == "probe"
    assert client.store.release_loop_lease(MODEL, "probe")
