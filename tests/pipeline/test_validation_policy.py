"""What data validation does to a pipeline run (issue 18): a missing column is a validation
failure (exit 11); soft problems are shown and handled by ``validation.on_soft`` (warn, hold,
fail), with the terminal, the JSON, the registry and the artifacts telling the same story; a
first run (no champion) is checked against its own training part."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from pipeline_support import invoke_run

from modelloop.cli._pipeline import (
    EXIT_ALIAS_HELD,
    EXIT_VALIDATION_FAILED,
)
from modelloop.exceptions import NotFound
from modelloop.pipeline import Pipeline
from modelloop.pipeline._schema import DataValidationError


def _client() -> Any:
    from modelloop import Client, Settings

    return Client(Settings.from_env())


def _artifact_json(client: Any, run_id: str, path: str) -> Any:
    items = {a.path: a for a in client.list_artifacts(run_id)}
    return json.loads(client.artifacts.read_bytes(items[path].digest))


def _step_runs(client: Any, experiment: str, parent: str) -> dict[str, Any]:
    page = client.search_runs(experiment, filter=f"tags.`modelloop.parent_run_id` = '{parent}'")
    return {r.tags["modelloop.step"]: r for r in page.items}


def _shift_above_training_max(csv: Path, column: str) -> float:
    """Every value of ``column`` moved above the largest one the data had; returns that max."""
    frame = pd.read_csv(csv)
    top = float(frame[column].max())
    frame[column] = frame[column] + top + 1.0
    frame.to_csv(csv, index=False)
    return top


# -- item 1: a missing column --------------------------------------------------------------------


def test_a_missing_column_is_a_validation_failure_with_exit_11(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["explain"] = {"enabled": False}
    path = write_spec(cancer_spec)
    assert invoke_run(cli, str(path)).exit_code == 0  # a champion with its schema
    pd.read_csv(cancer_csv).drop(columns="worst_area").to_csv(cancer_csv, index=False)
    result = invoke_run(cli, str(path))
    assert result.exit_code == EXIT_VALIDATION_FAILED == DataValidationError.exit_code == 11
    assert "data validation failed" in result.stderr
    assert "'worst_area'" in result.stderr and "missing" in result.stderr
    assert "named in features" in result.stderr
    client = _client()
    try:
        failed = client.search_runs(
            "cancer", filter="tags.`modelloop.pipeline_status` = 'validation_failed'"
        ).items
        assert len(failed) == 1
        steps = _step_runs(client, "cancer", failed[0].run_id)
        assert {k: r.status for k, r in steps.items()} == {
            "load": "FINISHED",
            "validate": "FAILED",
        }
        report = _artifact_json(client, steps["validate"].run_id, "outputs/validation.json")
        found = [(v["column"], v["rule"], v["severity"]) for v in report["report"]["violations"]]
        assert found == [("worst_area", "missing_column", "hard")]
    finally:
        client.close()


def test_a_missing_column_on_a_first_run_is_a_validation_failure_too(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    pd.read_csv(cancer_csv).drop(columns="size").to_csv(cancer_csv, index=False)
    with pytest.raises(DataValidationError) as exc:
        Pipeline(cancer_spec, base_dir=cancer_csv.parent).run(client)
    assert "'size'" in str(exc.value) and "evaluation.segments" in str(exc.value)
    assert [v.rule for v in exc.value.report.hard] == ["missing_column"]


# -- item 2: soft problems and validation.on_soft ------------------------------------------------


def _champion_then_shifted(cli: typer.Typer, write_spec: Any, spec: dict[str, Any], csv: Path):  # type: ignore[no-untyped-def]
    spec["explain"] = {"enabled": False}
    path = write_spec(spec)
    first = invoke_run(cli, str(path), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["registered_version"] == 1
    top = _shift_above_training_max(csv, "worst_area")
    return path, top


def test_soft_problems_under_warn_are_shown_tagged_and_the_model_promoted(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    path, top = _champion_then_shifted(cli, write_spec, cancer_spec, cancer_csv)
    result = invoke_run(cli, str(path), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "registered" and out["registered_version"] == 2
    assert out["alias_moved"] is True
    assert out["validation"]["policy"] == "warn"
    assert out["validation"]["reference"] == "cancer v1 (champion)"
    soft = out["validation"]["soft"]
    assert len(soft) == 1 and "[max]" in soft[0] and "'worst_area'" in soft[0]
    assert "569 values above the maximum" in soft[0]
    client = _client()
    try:
        mv = client.resolve("models:/cancer@champion")
        assert mv.version == 2
        assert mv.tags["modelloop.validation_soft"] == "1"
        assert mv.tags["modelloop.validation_policy"] == "warn"
        assert mv.tags["modelloop.validation_problems"] == soft[0]
        parent = client.get_run(out["run_id"])
        assert parent.tags["modelloop.validation_problems"] == soft[0]
        # the artifact says the same as the terminal
        validate = _step_runs(client, "cancer", out["run_id"])["validate"]
        report = _artifact_json(client, validate.run_id, "outputs/validation.json")["report"]
        assert [v["rule"] for v in report["violations"]] == ["max"]
        assert report["violations"][0]["count"] == 569
    finally:
        client.close()
    # rerun unchanged: v2 is champion now and was trained on exactly this data, so the data is
    # checked as v2's was (against v1's schema), every step a cache hit, the same verdict
    again = invoke_run(cli, str(path), "--json")
    assert again.exit_code == 0, again.output
    cached = json.loads(again.stdout)
    assert all(s["cache_hit"] for s in cached["steps"])
    assert cached["registered_version"] == 2 and cached["validation"]["soft"] == soft
    assert cached["validation"]["reference"] == "cancer v1 (champion)"
    # the plain summary lists the problem too
    text = invoke_run(cli, str(path))
    assert text.exit_code == 0
    flat = " ".join(text.stdout.split())
    assert "1 soft problem(s)" in flat and "worst_area" in flat and f"{top:.6g}" in flat


def test_soft_problems_under_hold_register_without_moving_the_alias(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["validation"] = {"on_soft": "hold"}
    path, _ = _champion_then_shifted(cli, write_spec, cancer_spec, cancer_csv)
    result = invoke_run(cli, str(path), "--json")
    assert result.exit_code == EXIT_ALIAS_HELD == 12, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "held" and out["registered_version"] == 2
    assert out["alias_moved"] is False and "not moved" in out["reason"]
    assert out["ok"] is True  # every gate passed
    client = _client()
    try:
        assert client.resolve("models:/cancer@champion").version == 1
        v2 = client.get_model_version("cancer", 2)
        assert v2.aliases == ()
        assert v2.tags["modelloop.validation_policy"] == "hold"
        assert "worst_area" in v2.tags["modelloop.validation_problems"]
        runs = _step_runs(client, "cancer", out["run_id"])
        reg = _artifact_json(client, runs["register"].run_id, "outputs/register.json")
        assert reg["registered"] is True and reg["alias_moved"] is False and reg["held"]
        assert client.get_run(out["run_id"]).tags["modelloop.pipeline_status"] == "held"
    finally:
        client.close()
    # a cached rerun holds again and never moves the alias
    again = invoke_run(cli, str(path))
    assert again.exit_code == EXIT_ALIAS_HELD
    assert "alias held" in again.stdout
    client = _client()
    try:
        assert client.resolve("models:/cancer@champion").version == 1
    finally:
        client.close()


def test_soft_problems_under_fail_stop_before_training_with_exit_11(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["validation"] = {"on_soft": "fail"}
    path, _ = _champion_then_shifted(cli, write_spec, cancer_spec, cancer_csv)
    result = invoke_run(cli, str(path))
    assert result.exit_code == EXIT_VALIDATION_FAILED
    assert "soft violation(s) (validation.on_soft: fail)" in result.stderr
    assert "worst_area" in result.stderr
    client = _client()
    try:
        assert [mv.version for mv in client.list_model_versions("cancer")] == [1]
        failed = client.search_runs(
            "cancer", filter="tags.`modelloop.pipeline_status` = 'validation_failed'"
        ).items
        steps = _step_runs(client, "cancer", failed[0].run_id)
        assert sorted(steps) == ["load", "validate"]  # stopped before training
    finally:
        client.close()


def test_on_soft_is_validated_with_the_rest_of_the_spec(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    path = write_spec(cancer_spec)
    result = invoke_run(cli, str(path), "--set", "validation.on_soft=ignore")
    assert result.exit_code == 2
    stderr = " ".join(result.stderr.split())
    assert "modelloop.yaml: validation.on_soft:" in stderr and "'warn', 'hold' or 'fail'" in stderr


# -- item 3: the first run is validated -----------------------------------------------------------


def test_a_first_run_with_a_30_percent_null_column_stops_before_training(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    frame = pd.read_csv(cancer_csv)
    frame.loc[frame.sample(frac=0.3, random_state=0).index, "mean_texture"] = None
    frame.to_csv(cancer_csv, index=False)
    with pytest.raises(DataValidationError) as exc:
        Pipeline(cancer_spec, base_dir=cancer_csv.parent).run(client)
    hard = exc.value.report.hard
    # in the training part and in the test part, each above the limit
    assert [(v.column, v.rule) for v in hard] == [("mean_texture", "nulls")] * 2
    assert "in the training part" in hard[0].message and "in the test part" in hard[1].message
    assert "max_null_rate (5.00%)" in str(exc.value)
    with pytest.raises(NotFound):
        client.get_registered_model("cancer")
    # the threshold is the pipeline's to set
    spec = {**cancer_spec, "validation": {"max_null_rate": 0.5}}
    result = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    assert result.status == "registered"


def test_a_first_run_checks_its_test_part_against_its_training_part(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    frame = pd.read_csv(cancer_csv)
    frame["t"] = range(len(frame))
    later = frame["t"] >= 400
    frame.loc[later & (frame.index % 2 == 0), "mean_smoothness"] = None  # nulls only later
    frame.loc[later, "size"] = "huge"  # a segment value the training part never had
    frame.to_csv(cancer_csv, index=False)
    spec = {**cancer_spec, "split": {"method": "time", "column": "t", "cutoff": "400"}}
    with pytest.raises(DataValidationError) as exc:
        Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    hard = {(v.column, v.rule) for v in exc.value.report.hard}
    assert hard == {("mean_smoothness", "nulls"), ("size", "categories")}
    message = str(exc.value)
    assert "'mean_smoothness': 85 null values (50.30%) in the test part" in message
    assert "'huge'" in message


def test_a_first_run_reports_soft_problems_of_its_test_part(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    frame = pd.read_csv(cancer_csv)
    frame["t"] = range(len(frame))
    frame.loc[frame["t"] >= 400, "worst_area"] += 10_000.0  # later rows out of range
    frame.to_csv(cancer_csv, index=False)
    spec = {
        **cancer_spec,
        "split": {"method": "time", "column": "t", "cutoff": "400"},
        "explain": {"enabled": False},
        "gates": ["auc >= 0.5"],
    }
    result = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    assert result.status == "registered"
    assert result.validation["reference"].startswith("the training part of this run's data")
    soft = [p for p in result.soft_problems if "'worst_area'" in p]
    assert len(soft) == 1 and "169 values above the maximum" in soft[0]
    # the split column is no finding: its test part is later by design
    assert not [p for p in result.soft_problems if "column 't'" in p]
    mv = client.get_model_version("cancer", 1)
    assert "worst_area" in mv.tags["modelloop.validation_problems"]
