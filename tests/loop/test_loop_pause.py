"""Pausing, resuming and approving the loop on real parts: the controller of
``loop_support`` (SQLite or PostgreSQL store, the real pipeline, real monitoring runs,
served traffic in the prediction log), driven by the test's clock; the CLI through its app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from loop_support import HOUR, MODEL, make_controller, make_policy, make_world, serve_rows
from typer.testing import CliRunner

from modelloop.exceptions import Conflict, NotFound
from modelloop.loop._controller import OUTCOME_TAG, RetrainOutcome, request_retrain
from modelloop.loop._operator import approve_loop, pause_loop, reject_loop, resume_loop


@pytest.fixture
def world(client: Any, tmp_path: Path) -> dict[str, Any]:
    return make_world(client, tmp_path)


@pytest.fixture
def any_world(any_client: Any, tmp_path: Path) -> dict[str, Any]:
    return make_world(any_client, tmp_path)


def _kinds(client: Any) -> list[str]:
    return [e.kind for e in client.store.list_loop_events(MODEL)]


def _state(client: Any) -> Any:
    state = client.store.get_loop_state(MODEL)
    assert state is not None
    return state


def _serve_stage(world: dict[str, Any], seed: int) -> int:
    """Labelled traffic for the current stage on both routes; returns the stage's start."""
    client = world["client"]
    start = int(_state(client).data["started_at"])
    for version, route in ((2, "canary"), (1, "champion")):
        serve_rows(
            client,
            world["drifted"].sample(300, random_state=seed + version),
            version=version,
            route=route,
            start_ms=start + 1000,
            span_ms=HOUR // 2,
        )
    return start


def test_a_paused_loop_neither_retrains_nor_advances_and_resumes_where_it_was(world) -> None:  # type: ignore[no-untyped-def]
    client, clock = world["client"], world["clock"]
    ctl = make_controller(world, make_policy())
    with pytest.raises(NotFound, match="no loop has run"):
        pause_loop(client.store, MODEL, user="ann", reason="x")
    # a first tick that finds nothing to do is not possible here (drift fires): start the loop
    # by pausing it right after its first state exists
    client.store.transition_loop(
        MODEL, expected_revision=0, state="idle", data={}, kind="init", message="loop created"
    )
    pause_loop(client.store, MODEL, user="ann", reason="label pipeline broken")
    for _ in range(3):  # the drift trigger fires, yet nothing happens, and it is said once
        result = ctl.tick()
        assert result.state == "idle" and "paused by ann: label pipeline broken" in result.message
    assert _kinds(client) == ["init", "pause", "wait"]
    assert len(client.store.list_model_versions(MODEL)) == 1  # no retrain
    assert ctl.tick(dry_run=True).planned == ()
    with pytest.raises(Conflict, match="paused"):
        request_retrain(client.store, MODEL, "by hand")
    with pytest.raises(Conflict, match="already paused"):
        pause_loop(client.store, MODEL, user="bob")

    event = resume_loop(client.store, MODEL, user="bob", reason="labels fixed")
    assert event.kind == "resume" and event.evidence["user"] == "bob"
    assert ctl.tick().state == "rollout"
    assert _kinds(client)[-3:] == ["trigger", "retrain", "stage"]
    assert _state(client).data["share"] == 0.25

    # paused in a canary stage that has passed its minimum duration with good evidence
    _serve_stage(world, 0)
    clock.now = int(_state(client).data["started_at"]) + HOUR + 60_000
    deadline = int(_state(client).data["deadline"])
    pause_loop(client.store, MODEL, user="ann", reason="freeze", now=clock.now)
    clock.now += 2 * HOUR
    result = ctl.tick()
    state = _state(client)
    assert result.state == "rollout" and state.data["stage"] == 0 and state.data["share"] == 0.25
    assert client.store.get_version_by_alias(MODEL, "challenger").version == 2
    assert client.store.get_version_by_alias(MODEL, "champion").version == 1
    resume_loop(client.store, MODEL, user="bob", now=clock.now)
    with pytest.raises(Conflict, match="not paused"):
        resume_loop(client.store, MODEL, user="bob", now=clock.now)
    # the time paused does not count against the stage's time limit
    assert int(_state(client).data["deadline"]) >= deadline + 2 * HOUR
    result = ctl.tick()
    assert result.state == "rollout" and _state(client).data["share"] == 0.5
    kinds = _kinds(client)
    assert kinds[kinds.index("stage") + 1 :] == ["pause", "wait", "resume", "stage"]


def test_a_persons_decisions_reach_the_controllers_notifier_once(world) -> None:  # type: ignore[no-untyped-def]
    client = world["client"]
    told: list[Any] = []
    ctl = make_controller(world, make_policy(), notify=told.append)
    client.store.transition_loop(
        MODEL, expected_revision=0, state="idle", data={}, kind="init", message="loop created"
    )
    pause_loop(client.store, MODEL, user="ann", reason="before the controller looked")
    ctl.tick()  # the first tick notes where the log stands: older events are not replayed
    assert [e.kind for e in told] == ["wait"]
    resume_loop(client.store, MODEL, user="bob", reason="labels fixed")
    ctl.tick()  # relays bob's resume, then tells its own transitions
    assert [e.kind for e in told] == ["wait", "resume", "trigger", "retrain", "stage"]
    assert told[1].evidence["user"] == "bob"
    pause_loop(client.store, MODEL, user="ann", reason="freeze")
    ctl.tick()
    ctl.tick()  # nothing new: nothing told twice
    assert [e.kind for e in told][5:] == ["pause", "wait"]
    ids = [e.event_id for e in told]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids)


class _PausedMidTick:
    """The pipeline's actions, with an operator pausing the loop while the retrain runs."""

    def __init__(self, inner: Any, store: Any) -> None:
        self.inner, self.store = inner, store

    def retrain(self, *, attempt: str, data: Path | None, with_source: bool = False) -> Any:
        outcome: RetrainOutcome = self.inner.retrain(
            attempt=attempt, data=data, with_source=with_source
        )
        pause_loop(self.store, MODEL, user="ann", reason="during the retrain")
        return outcome

    def score(self, version: int, rows: Any, metric: str) -> float | None:
        return self.inner.score(version, rows, metric)


def test_a_pause_during_a_tick_is_not_lost_and_the_retrain_is_not_repeated(any_world) -> None:  # type: ignore[no-untyped-def]
    client = any_world["client"]
    ctl = make_controller(any_world, make_policy())
    ctl.actions = _PausedMidTick(ctl.actions, client.store)
    result = ctl.tick()
    # the tick's own transition (retraining -> gating) lost the compare-and-set to the pause
    state = _state(client)
    assert state.state == "retraining" and state.data["paused"]["by"] == "ann"
    assert "changed meanwhile" in result.message
    assert _kinds(client) == ["trigger", "pause"]
    assert ctl.tick().state == "retraining"
    assert _kinds(client) == ["trigger", "pause", "wait"]
    ctl.actions = ctl.actions.inner
    resume_loop(client.store, MODEL, user="ann")
    assert ctl.tick().state == "rollout"
    # the challenger the interrupted tick registered is the one rolled out: no second retrain
    assert len(client.store.list_model_versions(MODEL)) == 2
    retrain = [e for e in client.store.list_loop_events(MODEL) if e.kind == "retrain"]
    assert len(retrain) == 1 and retrain[0].evidence["resumed"] is True


def test_approval_before_the_rollout_waits_and_approve_starts_the_canary(any_world) -> None:  # type: ignore[no-untyped-def]
    client = any_world["client"]
    ctl = make_controller(any_world, make_policy(rollout={"approval": "before_rollout"}))
    result = ctl.tick()
    assert result.state == "awaiting_approval"
    approval = client.store.list_loop_events(MODEL)[-1]
    assert approval.kind == "approval" and approval.evidence["passed"] is True
    assert {"challenger_value", "champion_value", "rows"} <= set(approval.evidence)
    # nothing moves while it waits: no stage, no challenger traffic
    assert ctl.tick().state == "awaiting_approval"
    assert _kinds(client) == ["trigger", "retrain", "approval"]
    assert "stage" not in _state(client).data
    event = approve_loop(client.store, MODEL, user="carol", reason="numbers look right")
    assert (event.kind, event.state, event.evidence["user"]) == ("approve", "approved", "carol")
    assert "carol" in event.message
    with pytest.raises(Conflict, match="not awaiting approval"):
        approve_loop(client.store, MODEL, user="carol")
    result = ctl.tick()
    state = _state(client)
    assert result.state == "rollout" and state.data["stage"] == 0 and state.data["share"] == 0.25
    assert client.store.list_loop_events(MODEL)[-1].evidence["approved_by"] == "carol"


def test_reject_drops_the_challenger_as_a_failed_gate_would(world) -> None:  # type: ignore[no-untyped-def]
    client = world["client"]
    ctl = make_controller(world, make_policy(rollout={"approval": "both"}))
    assert ctl.tick().state == "awaiting_approval"
    event = reject_loop(client.store, MODEL, user="dan", reason="trained on a bad week")
    assert (event.kind, event.state, event.evidence["user"]) == ("reject", "rolling_back", "dan")
    assert ctl.tick().state == "rolled_back"
    with pytest.raises(NotFound, match="no alias 'challenger'"):
        client.store.get_version_by_alias(MODEL, "challenger")
    outcome = client.store.get_model_version(MODEL, 2).tags[OUTCOME_TAG]
    assert outcome.startswith("rolled back: rejected by dan") and "bad week" in outcome
    assert client.store.get_version_by_alias(MODEL, "champion").version == 1
    with pytest.raises(Conflict, match="not awaiting approval"):
        reject_loop(client.store, MODEL, user="dan")


def test_an_approval_not_given_in_time_is_a_rejection(world) -> None:  # type: ignore[no-untyped-def]
    client, clock = world["client"], world["clock"]
    policy = make_policy(rollout={"approval": "before_rollout", "approval_timeout": "1h"})
    ctl = make_controller(world, policy)
    assert ctl.tick().state == "awaiting_approval"
    clock.now += HOUR // 2
    assert ctl.tick().state == "awaiting_approval"
    clock.now += HOUR
    assert ctl.tick().state == "rolled_back"
    reject = [e for e in client.store.list_loop_events(MODEL) if e.kind == "reject"]
    assert len(reject) == 1 and reject[0].evidence["timeout"] is True
    assert (
        client.store.get_model_version(MODEL, 2)
        .tags[OUTCOME_TAG]
        .startswith("rolled back: no approval within 3600 s")
    )


def test_approval_before_the_promotion_holds_the_last_share_until_approved(world) -> None:  # type: ignore[no-untyped-def]
    client, clock = world["client"], world["clock"]
    policy = make_policy(
        rollout={
            "approval": "before_promote",
            "canary": {"steps": [0.5], "min_duration": "1h", "min_outcomes": 100},
        }
    )
    ctl = make_controller(world, policy)
    assert ctl.tick().state == "rollout"
    start = _serve_stage(world, 0)
    clock.now = start + HOUR + 60_000
    assert ctl.tick().state == "awaiting_approval"
    state = _state(client)
    assert (state.data["mode"], state.data["share"], state.data["approval"]) == (
        "canary",
        0.5,
        "promote",
    )
    assert state.data["evidence"]["judge"]["outcome"] == "pass"
    assert client.store.get_version_by_alias(MODEL, "champion").version == 1
    approve_loop(client.store, MODEL, user="erin")
    assert ctl.tick().state == "promoted"
    assert client.store.get_version_by_alias(MODEL, "champion").version == 2
    assert _kinds(client)[-4:] == ["approval", "approve", "judge", "promote"]


runner = CliRunner()


def _cli(*args: str) -> Any:
    from modelloop.cli import app

    return runner.invoke(app, list(args))


def test_the_cli_pauses_resumes_and_names_what_is_wrong(client: Any) -> None:
    from modelloop.exceptions import Conflict as C
    from modelloop.exceptions import NotFound as N

    unknown = _cli("loop", "pause", "nobody")
    assert unknown.exit_code == N.exit_code and "no loop has run for model 'nobody'" in (
        unknown.output
    )
    client.store.transition_loop(
        MODEL, expected_revision=0, state="idle", data={}, kind="init", message="created"
    )
    ok = _cli("loop", "pause", MODEL, "--reason", "holiday freeze")
    assert ok.exit_code == 0, ok.output
    assert "paused by tester: holiday freeze" in ok.output
    status = _cli("loop", "status", MODEL)
    assert "paused" in status.output and "by tester" in status.output
    as_json = _cli("loop", "status", MODEL, "--json")
    assert '"paused"' in as_json.output
    not_waiting = _cli("loop", "approve", MODEL)
    assert not_waiting.exit_code == C.exit_code
    assert "not awaiting approval (it is idle)" in not_waiting.output
    assert _cli("loop", "reject", MODEL).exit_code == C.exit_code
    assert _cli("loop", "resume", MODEL).exit_code == 0
    again = _cli("loop", "resume", MODEL)
    assert again.exit_code == C.exit_code and "is not paused" in again.output
    kinds = [(e.kind, e.evidence.get("user")) for e in client.store.list_loop_events(MODEL)]
    assert kinds == [("init", None), ("pause", "tester"), ("resume", "tester")]


def test_a_pause_racing_with_transitions_is_applied_once_and_never_undone(any_client) -> None:  # type: ignore[no-untyped-def]
    import threading

    store = any_client.store
    store.transition_loop(
        MODEL, expected_revision=0, state="idle", data={"n": 0}, kind="init", message="created"
    )
    stop = threading.Event()

    def ticker() -> None:
        """Writes as a controller does: from the state it read, compare-and-set on its
        revision, never on behalf of a paused loop."""
        while not stop.is_set():
            state = store.get_loop_state(MODEL)
            if state.data.get("paused"):
                return
            try:
                store.transition_loop(
                    MODEL,
                    expected_revision=state.revision,
                    state="idle",
                    data={**state.data, "n": int(state.data["n"]) + 1},
                    kind="baseline",
                    message="tick",
                )
            except Conflict:
                continue  # the pause came first: read again

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        while int(store.get_loop_state(MODEL).data["n"]) < 5:
            pass
        pause_loop(store, MODEL, user="ann", reason="race")
        thread.join(timeout=60)
    finally:
        stop.set()
        thread.join(timeout=60)
    state = store.get_loop_state(MODEL)
    assert state.data["paused"]["by"] == "ann"
    events = store.list_loop_events(MODEL, limit=10_000)
    assert [e.kind for e in events].count("pause") == 1
    assert events[-1].kind == "pause"  # no tick was written after it
    # every write is one revision: none was lost or applied twice
    assert state.revision == len(events)


def test_the_approval_options_are_checked() -> None:
    from modelloop.exceptions import InvalidInput
    from modelloop.loop import parse_policy

    policy = parse_policy({"rollout": {"approval": "both", "approval_timeout": "2d"}})
    assert policy.rollout.needs_approval("rollout") and policy.rollout.needs_approval("promote")
    assert policy.rollout.approval_timeout_s == 2 * 86400
    default = parse_policy({})
    assert not default.rollout.needs_approval("rollout")
    assert not default.rollout.needs_approval("promote")
    with pytest.raises(InvalidInput, match=r"rollout\.approval") as bad:
        parse_policy({"rollout": {"approval": "sometimes", "approval_timeout": "-1h"}})
    assert "approval_timeout" in str(bad.value)
