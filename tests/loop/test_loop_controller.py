"""The controller on real parts: a SQLite store, the real pipeline, real monitoring runs, and
traffic in the prediction log and feedback as the server writes them. The clock is the test's, so
stages can pass their minimum durations and time limits without waiting."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from loop_support import (
    DAY,
    HOUR,
    MODEL,
    make_controller,
    make_policy,
    make_world,
    serve_rows,
)

from modelloop.exceptions import Conflict, NotFound
from modelloop.loop._actions import PipelineActions
from modelloop.loop._controller import ATTEMPT_TAG, OUTCOME_TAG, Controller


@pytest.fixture
def world(client: Any, tmp_path: Path) -> dict[str, Any]:
    """Champion v1 trained on the first 400 rows; 600 drifted, labelled rows served by it over
    the day before the clock's start; a stored monitoring run that finds the drift."""
    return make_world(client, tmp_path)


@pytest.fixture
def any_world(any_client: Any, tmp_path: Path) -> dict[str, Any]:
    """The same world on every store backend (SQLite and PostgreSQL)."""
    return make_world(any_client, tmp_path)


def _kinds(client: Any) -> list[str]:
    return [e.kind for e in client.store.list_loop_events(MODEL)]


def test_drift_retrains_once_and_the_challenger_is_promoted_through_every_step(world) -> None:  # type: ignore[no-untyped-def]
    client, clock, drifted = world["client"], world["clock"], world["drifted"]
    ctl = make_controller(world, make_policy())

    first = ctl.tick()
    assert first.state == "rollout" and _kinds(client) == ["trigger", "retrain", "stage"]
    trigger = client.store.list_loop_events(MODEL)[0]
    assert trigger.evidence["fired"][0]["trigger"] == "drift_share"
    assert trigger.evidence["fired"][0]["value"] >= 0.5
    challenger = client.store.get_version_by_alias(MODEL, "challenger")
    assert challenger.version == 2 and challenger.tags[ATTEMPT_TAG] == f"{MODEL}:1"
    retrain = client.store.list_loop_events(MODEL)[1]
    assert retrain.evidence["training_rows"] == 600  # the labelled served rows alone
    assert client.store.get_version_by_alias(MODEL, "champion").version == 1

    # ticking again before anything happened starts no second retrain
    again = ctl.tick()
    assert again.state == "rollout" and not again.acted
    assert len(client.store.list_model_versions(MODEL)) == 2

    for step in range(2):
        stage_start = int(client.store.get_loop_state(MODEL).data["started_at"])  # type: ignore[union-attr]
        for version, route in ((2, "canary"), (1, "champion")):
            serve_rows(
                client,
                drifted.sample(300, random_state=10 * step + version),
                version=version,
                route=route,
                start_ms=stage_start + 1000,
                span_ms=HOUR // 2,
            )
        clock.now = stage_start + HOUR + 60_000
        ctl.tick()

    state = client.store.get_loop_state(MODEL)
    assert state is not None and state.state == "promoted"
    assert client.store.get_version_by_alias(MODEL, "champion").version == 2
    assert client.store.get_model_version(MODEL, 2).tags[OUTCOME_TAG] == "promoted"
    assert _kinds(client) == ["trigger", "retrain", "stage", "stage", "judge", "promote"]
    judged = [e for e in client.store.list_loop_events(MODEL) if e.kind in ("stage", "judge")]
    for event in judged[1:]:  # each later step carries the judge's statistics of the one before
        verdict = event.evidence["judge"]
        assert verdict["outcome"] == "pass" and verdict["n_challenger"] == 300
        assert verdict["n_champion"] == 300 and verdict["interval"][1] <= 0.1
    # no trigger after the promotion: the stored drift result predates the retrain
    clock.now += 2 * HOUR
    assert ctl.tick().message == "no trigger fired"


def test_a_bad_challenger_is_rolled_back_at_the_first_step(world) -> None:  # type: ignore[no-untyped-def]
    client, clock = world["client"], world["clock"]
    # the served rows it will be trained on carry shuffled labels; the loop's own gate is off
    home = Path(client.settings.home)
    for f in (home / "feedback" / MODEL).glob("*.parquet"):
        labels = pd.read_parquet(f)
        labels["label"] = np.random.default_rng(5).permutation(labels["label"].to_numpy())
        labels.to_parquet(f, index=False)
    ctl = make_controller(world, make_policy(gate={"min_rows": 10**9}))
    assert ctl.tick().state == "rollout"
    stage_start = int(client.store.get_loop_state(MODEL).data["started_at"])  # type: ignore[union-attr]
    for version, route in ((2, "canary"), (1, "champion")):
        serve_rows(
            client,
            world["drifted"].sample(300, random_state=version),
            version=version,
            route=route,
            start_ms=stage_start + 1000,
            span_ms=HOUR // 2,
        )
    clock.now = stage_start + HOUR + 60_000
    result = ctl.tick()
    assert result.state == "rolled_back"
    events = client.store.list_loop_events(MODEL)
    assert [e.kind for e in events][-2:] == ["judge", "rollback"]
    verdict = events[-2].evidence["judge"]
    assert verdict["outcome"] == "fail" and verdict["interval"][0] > 0
    assert verdict["challenger"] > verdict["champion"]
    with pytest.raises(NotFound, match="no alias 'challenger'"):
        client.store.get_version_by_alias(MODEL, "challenger")
    assert client.store.get_model_version(MODEL, 2).tags[OUTCOME_TAG].startswith("rolled back")
    assert client.store.get_version_by_alias(MODEL, "champion").version == 1


def test_too_few_labels_in_time_applies_the_inconclusive_policy(world) -> None:  # type: ignore[no-untyped-def]
    client, clock = world["client"], world["clock"]
    ctl = make_controller(world, make_policy(judge={"inconclusive": "wait", "max_waits": 1}))
    assert ctl.tick().state == "rollout"
    stage_start = int(client.store.get_loop_state(MODEL).data["started_at"])  # type: ignore[union-attr]
    for version, route in ((2, "canary"), (1, "champion")):
        serve_rows(
            client,
            world["drifted"].sample(20, random_state=version),
            version=version,
            route=route,
            start_ms=stage_start + 1000,
            span_ms=HOUR // 2,
        )
    clock.now = stage_start + 2 * HOUR
    waiting = ctl.tick()
    assert waiting.state == "rollout" and "inconclusive so far" in waiting.message
    clock.now = stage_start + 6 * HOUR + 1
    extended = ctl.tick()
    assert extended.state == "rollout" and _kinds(client)[-1] == "inconclusive"
    assert "waiting once more (1 of 1)" in client.store.list_loop_events(MODEL)[-1].message
    clock.now = stage_start + 12 * HOUR + 2
    ended = ctl.tick()
    assert ended.state == "rolled_back"
    rollback = [e for e in client.store.list_loop_events(MODEL) if e.kind == "judge"][-1]
    assert rollback.evidence["inconclusive"] is True and rollback.evidence["policy"] == "wait"
    assert "20 of 100 labelled outcomes needed" in rollback.message


def test_two_controllers_one_acts_the_other_names_the_holder(any_world) -> None:  # type: ignore[no-untyped-def]
    import threading

    client = any_world["client"]
    controllers = [make_controller(any_world, make_policy(), holder=f"ctl-{x}") for x in "ab"]
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def run(ctl: Controller) -> None:
        start.wait()
        results[ctl.holder] = ctl.tick()

    threads = [threading.Thread(target=run, args=(c,)) for c in controllers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acted = [h for h, r in results.items() if r.acted]
    assert len(acted) == 1
    (waiting,) = (r for h, r in results.items() if h not in acted)
    assert f"held by {acted[0]}" in waiting.message
    assert [e.kind for e in client.store.list_loop_events(MODEL)] == ["trigger", "retrain", "stage"]
    assert len(client.store.list_model_versions(MODEL)) == 2  # one retrain
    with pytest.raises(Conflict, match="busy"):
        controllers[0].request_retrain()


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    client = world["client"]
    ctl = make_controller(world, make_policy())
    result = ctl.tick(dry_run=True)
    assert not result.acted and result.planned
    assert result.planned[0].startswith("idle -> retraining: retrain: drift share")
    assert client.store.get_loop_state(MODEL) is None
    assert client.store.list_loop_events(MODEL) == []
    assert len(client.store.list_model_versions(MODEL)) == 1


def test_a_crash_after_registering_resumes_with_the_same_challenger(world) -> None:  # type: ignore[no-untyped-def]
    client = world["client"]
    ctl = make_controller(world, make_policy())
    ctl.tick(max_steps=1)  # the trigger is committed; the controller "dies" before retraining
    assert client.store.get_loop_state(MODEL).state == "retraining"  # type: ignore[union-attr]
    # the crashed controller's retrain had registered its challenger before dying (one tree
    # more: retrained on the champion's own rows, the same model would not be registered again)
    crashed = PipelineActions(client, world["file"], overrides={"model.params.n_estimators": 26})
    crashed.retrain(attempt=f"{MODEL}:1", data=None)
    assert len(client.store.list_model_versions(MODEL)) == 2
    restarted = make_controller(world, make_policy(), holder="ctl-a")
    assert restarted.tick().state == "rollout"
    assert len(client.store.list_model_versions(MODEL)) == 2  # found, not trained again
    retrain = next(e for e in client.store.list_loop_events(MODEL) if e.kind == "retrain")
    assert retrain.evidence["resumed"] is True and retrain.evidence["version"] == 2


def test_every_transition_reaches_a_webhook_and_the_gauges(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import threading
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from typer.testing import CliRunner

    from modelloop.cli import app
    from modelloop.loop._notify import LoopGauges
    from s3_support import free_port

    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        pipeline = world["file"]
        pipeline.write_text(
            pipeline.read_text()
            + "loop:\n  triggers: {drift_share: 0.5}\n"
            + "  training: {source: log, window: 30d, min_labelled_rows: 200}\n"
            + "  rollout: {canary: {steps: [0.2], min_duration: 1h}}\n"
            + "  judge: {max_p99_latency_ratio: null, max_error_rate: null}\n"
        )
        url = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        done = CliRunner().invoke(app, ["loop", "tick", str(pipeline), "--webhook", url, "--json"])
        assert done.exit_code == 0, done.output
        assert [e["kind"] for e in json.loads(done.stdout)["events"]] == [
            "trigger",
            "retrain",
            "stage",
        ]
    finally:
        hook.shutdown()
    assert [r["rule"] for r in received] == ["loop:trigger", "loop:retrain", "loop:stage"]
    assert received[-1]["status"] == "rollout" and received[-1]["model"] == MODEL
    assert received[0]["evidence"]["fired"][0]["trigger"] == "drift_share"

    gauges = LoopGauges()
    state = world["client"].store.get_loop_state(MODEL)
    gauges.update(state)
    for event in world["client"].store.list_loop_events(MODEL):
        gauges.count(event)
    port = free_port()
    server, _ = gauges.serve(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
    assert f'modelloop_loop_state{{model="{MODEL}",state="rollout"}} 1.0' in text
    assert f'modelloop_loop_state{{model="{MODEL}",state="idle"}} 0.0' in text
    assert f'modelloop_loop_canary_share{{model="{MODEL}"}} 0.2' in text
    assert f'modelloop_loop_challenger_version{{model="{MODEL}"}} 2.0' in text
    assert f'modelloop_loop_events_total{{kind="trigger",model="{MODEL}"}} 1.0' in text


@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        ({"metric_floor": {"accuracy": 0.999}}, "live accuracy"),
        ({"new_labels": 600}, "600 new labels since the last retrain"),
        ({"max_age": "1d"}, "champion v1 is"),
        ({"drifted_features": ["mean_radius"]}, "drifted: mean_radius"),
    ],
)
def test_each_trigger_fires_on_what_monitoring_and_the_log_hold(world, triggers, expected) -> None:  # type: ignore[no-untyped-def]
    world["clock"].now += 7 * DAY  # the champion, registered today, is 2 days old by then
    policy = make_policy(triggers={"drift_share": None, **triggers})
    result = make_controller(world, policy).tick(dry_run=True)
    assert result.planned and expected in result.planned[0], result.planned


def test_no_trigger_below_the_thresholds(world) -> None:  # type: ignore[no-untyped-def]
    policy = make_policy(
        triggers={
            "drift_share": None,
            "metric_floor": {"accuracy": 0.1},
            "new_labels": 10_000,
            "max_age": "30d",
        }
    )
    result = make_controller(world, policy).tick(dry_run=True)
    assert not result.planned and result.message == "no trigger fired"


def test_a_metric_drop_is_measured_from_the_first_live_value_of_the_version(world) -> None:  # type: ignore[no-untyped-def]
    from modelloop.monitoring import run_monitor

    client, clock = world["client"], world["clock"]
    policy = make_policy(triggers={"drift_share": None, "metric_drop": {"accuracy": 0.1}})
    ctl = make_controller(world, policy)
    first = ctl.tick()
    assert [e.kind for e in first.events] == ["baseline"] and first.state == "idle"
    baseline = first.events[0].evidence["baseline"]["1"]["accuracy"]
    assert 0.5 < baseline < 1  # the January champion on drifted traffic
    assert ctl.tick().message == "no trigger fired"  # recorded once
    # the same version now answers rows whose labels are all flipped: it is worse than before
    rows = world["drifted"].sample(400, random_state=3).reset_index(drop=True)
    flipped = 1 - rows["target"].to_numpy()
    serve_rows(
        client,
        rows,
        version=1,
        route="champion",
        start_ms=clock.now,
        span_ms=HOUR,
        labels=flipped,
    )
    clock.now += 2 * HOUR
    run_monitor(client, MODEL, window="2h", now=datetime.fromtimestamp(clock.now / 1000, tz=UTC))
    planned = ctl.tick(dry_run=True).planned
    assert planned and "live accuracy" in planned[0] and f"from {baseline:.4f}" in planned[0]


def test_training_on_the_log_and_the_pipeline_source_together(world) -> None:  # type: ignore[no-untyped-def]
    client = world["client"]
    ctl = make_controller(world, make_policy(training={"source": "both"}))
    assert ctl.tick().state == "rollout"
    retrain = next(e for e in client.store.list_loop_events(MODEL) if e.kind == "retrain")
    # the 400 rows of the pipeline's own file and the 600 labelled served rows
    assert retrain.evidence["labelled_rows"] == 600
    assert retrain.evidence["training_rows"] == 1000
