"""The loop policy: every wrong field reported at once, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.loop import LoopPolicy, load_policy, parse_policy

FULL = {
    "model": "flights-delay",
    "every": "5m",
    "cooldown": "6h",
    "max_retrains_per_day": 3,
    "triggers": {
        "drift_share": 0.5,
        "drifted_features": ["dep_delay"],
        "prediction_drift": True,
        "metric_floor": {"auc": 0.8},
        "metric_drop": {"auc": 0.03},
        "max_age": "30d",
        "new_labels": 20000,
    },
    "training": {"source": "both", "window": "60d", "mode": "expanding", "min_labelled_rows": 50},
    "gate": {"metric": "auc", "window": "7d", "min_rows": 100, "tolerance": 0.002},
    "rollout": {
        "shadow": {"min_duration": "10m", "min_outcomes": 100, "max_duration": "1h"},
        "canary": {
            "steps": [0.05, 0.25, 0.5],
            "min_duration": "30m",
            "min_outcomes": 200,
            "max_duration": "1d",
        },
    },
    "judge": {"alpha": 0.01, "margin": 0.02, "inconclusive": "wait", "max_waits": 3},
    "server": "http://127.0.0.1:8080/",
}


def test_a_full_policy_parses_into_seconds_and_stages() -> None:
    policy = parse_policy(FULL)
    assert policy.every_s == 300 and policy.cooldown_s == 6 * 3600
    assert policy.triggers.max_age_s == 30 * 86400
    assert policy.training.window_s == 60 * 86400 and policy.training.mode == "expanding"
    assert policy.server == "http://127.0.0.1:8080"
    stages = policy.stages()
    assert [(s.mode, s.share) for s in stages] == [
        ("shadow", 0.0),
        ("canary", 0.05),
        ("canary", 0.25),
        ("canary", 0.5),
    ]
    assert stages[0].max_duration_s == 3600 and stages[1].max_duration_s == 86400
    assert stages[1].min_outcomes == 200


def test_defaults_are_safe_a_judged_canary_before_any_promotion() -> None:
    policy = LoopPolicy()
    assert [s.share for s in policy.stages()] == [0.05, 0.25, 0.5]
    assert policy.judge.inconclusive == "rollback"
    assert all(s.min_outcomes > 0 for s in policy.stages())


def test_every_wrong_field_is_named_at_once() -> None:
    bad = {
        "model": "flights-delay",
        "colldown": "6h",
        "triggers": {"metric_floor": {"aucc": 0.8}, "max_age": "soon"},
        "rollout": {"canary": {"steps": [0.5, 0.25, 1.5]}},
        "judge": {"alpha": 0.7, "inconclusive": "pray"},
    }
    with pytest.raises(InvalidInput) as info:
        parse_policy(bad, source="modelloop.yaml: loop")
    lines = str(info.value).splitlines()
    text = "\n".join(lines)
    assert "modelloop.yaml: loop: colldown: unknown field" in lines
    assert "triggers.metric_floor: unknown metric 'aucc'" in text
    assert "triggers.max_age: 'soon' is not a duration" in text
    assert "rollout.canary.steps:" in text and "strictly between 0 and 1" in text
    assert "judge.alpha:" in text and "judge.inconclusive:" in text
    assert len(lines) >= 6


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"canary": {"steps": [0.25, 0.25]}}, "steps must increase strictly"),
        ({"canary": {"steps": []}}, "at least one step"),
        ({"canary": None}, "nothing is promoted without labelled evidence"),
        ({"canary": {"min_duration": "2h", "max_duration": "1h"}}, "at least min_duration"),
    ],
)
def test_impossible_rollouts_are_refused(rollout: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_policy({"rollout": rollout})


def test_loop_section_of_a_pipeline_file_takes_the_registered_name(tmp_path: Path) -> None:
    f = tmp_path / "modelloop.yaml"
    f.write_text(
        "register: {model_name: flights-delay}\n"
        "loop:\n  triggers: {drift_share: 0.4}\n  rollout: {canary: {steps: [0.1, 0.5]}}\n"
    )
    policy = load_policy(f)
    assert policy.model == "flights-delay" and policy.triggers.drift_share == 0.4
    assert [s.share for s in policy.stages()] == [0.1, 0.5]

    f.write_text("register: {model_name: flights-delay}\nloop:\n  every: never\n")
    with pytest.raises(InvalidInput, match=r"^modelloop.yaml: loop: every: 'never'"):
        load_policy(f)


def test_a_policy_file_of_its_own_and_a_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "loop.yaml"
    f.write_text("model: m1\njudge: {margin: 0.0}\n")
    assert load_policy(f).judge.margin == 0.0
    with pytest.raises(NotFound, match="no loop policy file"):
        load_policy(tmp_path / "absent.yaml")
    f.write_text("model: 'bad name/..'\n")
    with pytest.raises(InvalidInput, match=r"loop\.yaml: model:"):
        load_policy(f)


def test_the_cli_refuses_a_bad_policy_before_anything_runs(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from modelloop.cli import app

    (tmp_path / "train.csv").write_text("x,target\n1,0\n2,1\n")
    pipeline = tmp_path / "modelloop.yaml"
    pipeline.write_text(
        "name: p\ndata: {path: train.csv}\ntarget: target\n"
        "model: {estimator: sklearn.linear_model.LogisticRegression}\n"
        "register: {model_name: p}\n"
        "loop:\n  triggerz: {}\n  triggers: {metric_floor: {aucc: 0.8}}\n"
        "  rollout: {canary: {steps: [0.5, 0.2]}}\n"
    )
    done = CliRunner().invoke(app, ["loop", "tick", str(pipeline)])
    assert done.exit_code == 2
    err = " ".join(done.stderr.split())
    assert "loop: triggerz: unknown field" in err and "unknown metric 'aucc'" in err
    assert "steps must increase strictly" in err
    assert client.store.list_loop_states() == [] and client.store.list_registered_models() == []
    no_section = tmp_path / "plain.yaml"
    no_section.write_text(pipeline.read_text().split("loop:")[0])
    done = CliRunner().invoke(app, ["loop", "tick", str(no_section)])
    assert done.exit_code == 2 and "has no 'loop:' section" in " ".join(done.stderr.split())
