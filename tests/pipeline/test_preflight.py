"""Mistakes found before any step runs, all of them at once, each naming its field and the fix:
gate and metric names against the task, model params, data and reference files, data given as
a URL, and an artifact root that cannot be written (a missing S3 bucket)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from modelloop.cli._pipeline import pipeline_app
from modelloop.exceptions import InvalidInput, StoreError
from modelloop.pipeline import Pipeline, parse_spec


def _errors(exc: pytest.ExceptionInfo[Any]) -> list[str]:
    return str(exc.value).splitlines()


def _cli(*args: str) -> Any:
    app = typer.Typer()
    app.add_typer(pipeline_app, name="pipeline")
    return CliRunner().invoke(app, ["pipeline", "run", *args], catch_exceptions=False)


def test_an_unknown_gate_metric_exits_2_before_training(
    home: Path, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    from modelloop import Client, Settings

    cancer_spec["gates"] = ["aucc >= 0.7"]
    started = time.perf_counter()
    result = _cli(str(write_spec(cancer_spec)), "--json")
    assert result.exit_code == 2, result.output  # not 10 after training
    stderr = " ".join(result.stderr.split())
    assert "modelloop.yaml: gates.0: 'aucc >= 0.7': unknown metric 'aucc'" in stderr
    assert "did you mean 'auc'?" in stderr
    assert result.stdout == ""
    client = Client(Settings.from_env())
    try:
        assert not client.search_runs().items  # nothing trained, nothing recorded
    finally:
        client.close()
    assert time.perf_counter() - started < 30


def test_every_problem_of_a_file_is_reported_at_once(cancer_spec: dict[str, Any]) -> None:
    cancer_spec["split"]["test_size"] = 2  # a schema error ...
    cancer_spec["task"] = "classification"
    cancer_spec["evaluation"] = {"metrics": ["auc", "r2"]}  # ... and metric names, together
    cancer_spec["gates"] = [
        "aucc >= 0.7",
        "segment_gap <= 0.1",  # no segments any more
        "rmse <= champion * 1.1",
        "demographic_parity_difference <= 0.2",
        "auc >= 0.8",
    ]
    with pytest.raises(InvalidInput) as exc:
        parse_spec(cancer_spec, source="modelloop.yaml")
    errors = _errors(exc)
    assert errors[0].startswith("modelloop.yaml: split.test_size: ")
    assert errors[1:] == [
        "modelloop.yaml: gates.0: 'aucc >= 0.7': unknown metric 'aucc' (did you mean 'auc'?); "
        "a classification pipeline reports: accuracy, auc, brier, f1, log_loss, "
        "p95_latency_ms, precision, recall",
        "modelloop.yaml: gates.1: 'segment_gap <= 0.1': 'segment_gap' is reported only with "
        "segment columns: list them in evaluation.segments",
        "modelloop.yaml: gates.2: 'rmse <= champion * 1.1': 'rmse' is a regression metric and "
        "this is a classification pipeline",
        "modelloop.yaml: gates.3: 'demographic_parity_difference <= 0.2': "
        "'demographic_parity_difference' is reported only with sensitive columns: list them in "
        "evaluation.sensitive",
        "modelloop.yaml: evaluation.metrics.1: 'r2' is a regression metric and this is a "
        "classification pipeline",
    ]


def test_segment_and_fairness_gates_are_accepted_with_their_columns(
    cancer_spec: dict[str, Any],
) -> None:
    cancer_spec["evaluation"] = {"segments": ["size"], "sensitive": ["size"]}
    cancer_spec["gates"] = ["segment_gap <= 0.2", "equalized_odds_difference <= 0.3"]
    assert parse_spec(cancer_spec).gates == cancer_spec["gates"]


def test_metric_names_are_checked_against_the_task_the_model_tells(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    # no task in the file: a regressor makes it a regression pipeline, where auc never exists
    cancer_spec["model"] = {"estimator": "sklearn.linear_model.Ridge"}
    cancer_spec["gates"] = ["auc >= 0.8", "rmse <= 0.5"]
    pipe = Pipeline(cancer_spec, base_dir=cancer_csv.parent, source="modelloop.yaml")
    with pytest.raises(InvalidInput) as exc:
        pipe.run(client)
    assert _errors(exc) == [
        "modelloop.yaml: gates.0: 'auc >= 0.8': 'auc' is a classification metric and this is "
        "a regression pipeline"
    ]
    assert not client.search_runs().items


def test_params_data_and_reference_problems_come_together_before_any_run(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["data"] = {"path": "missing.csv"}
    cancer_spec["model"]["params"]["max_iterr"] = 5
    cancer_spec["validation"] = {"reference": "schema.json"}
    cancer_spec["tune"] = {
        "n_trials": 2,
        "space": {"learning_ratee": {"type": "float", "low": 0.01, "high": 0.3}},
    }
    pipe = Pipeline(cancer_spec, base_dir=cancer_csv.parent, source="modelloop.yaml")
    with pytest.raises(InvalidInput) as exc:
        pipe.run(client)
    errors = _errors(exc)
    assert [e.split(":")[1].strip() for e in errors] == [
        "model.params",
        "data.path",
        "validation.reference",
    ]
    assert "max_iterr" in errors[0]
    assert f"no such file {cancer_csv.parent / 'missing.csv'}" in errors[1]
    assert f"no such file {cancer_csv.parent / 'schema.json'}" in errors[2]
    assert not client.search_runs().items
    # with the params right, a tuned parameter the estimator does not take is named
    del cancer_spec["model"]["params"]["max_iterr"]
    pipe = Pipeline(cancer_spec, base_dir=cancer_csv.parent, source="modelloop.yaml")
    with pytest.raises(InvalidInput) as exc:
        pipe.run(client)
    assert any(
        e.startswith("modelloop.yaml: tune.space.learning_ratee: ") and "learning_ratee" in e
        for e in _errors(exc)
    )


def test_a_parameter_value_the_estimator_refuses_is_found_before_training(
    home: Path, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    from modelloop import Client, Settings

    cancer_spec["task"] = "classification"
    result = _cli(str(write_spec(cancer_spec)), "--set", "model.params.learning_rate=-1e-1")
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert (
        "modelloop.yaml: model.params: The 'learning_rate' parameter of "
        "HistGradientBoostingClassifier must be a float in the range (0.0, inf). Got -0.1"
    ) in stderr
    assert "Traceback" not in result.output
    client = Client(Settings.from_env())
    try:
        assert not client.search_runs().items  # stopped before the load step
    finally:
        client.close()


def test_a_missing_bucket_is_found_before_the_first_step(
    s3_server: Any,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    cancer_spec: dict[str, Any],
    cancer_csv: Path,
    write_spec: Any,
) -> None:
    from modelloop import Client, Settings

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("MODELLOOP_ARTIFACT_ROOT", "s3://no-such-bucket/artifacts")
    client = Client(Settings.from_env())
    try:
        pipe = Pipeline(cancer_spec, base_dir=cancer_csv.parent)
        with pytest.raises(StoreError) as exc:
            pipe.run(client)
        message = str(exc.value)
        assert "s3://no-such-bucket/artifacts" in message
        assert "the bucket 'no-such-bucket' does not exist" in message
        assert "MODELLOOP_ARTIFACT_ROOT" in message  # the fix
        assert not client.search_runs().items  # no pipeline run was started
    finally:
        client.close()
    # the CLI: exit 7 (store unavailable), one line
    result = _cli(str(write_spec(cancer_spec)))
    assert result.exit_code == 7, result.output
    assert "no-such-bucket" in result.stderr and "Traceback" not in result.output


def test_data_given_as_an_s3_url_is_read_as_a_url(
    s3_server: Any,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    cancer_spec: dict[str, Any],
    cancer_csv: Path,
) -> None:
    from modelloop import Client, Settings
    from s3_support import BUCKET

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    s3_server.client().put_object(
        Bucket=BUCKET, Key="data/cancer.csv", Body=cancer_csv.read_bytes()
    )
    cancer_spec["data"] = {"path": f"s3://{BUCKET}/data/cancer.csv"}
    cancer_spec["explain"] = {"enabled": False}
    client = Client(Settings.from_env())
    try:
        result = Pipeline(cancer_spec, base_dir=cancer_csv.parent).run(client)
        assert result.status == "registered", result.reason
        assert result.metrics["auc"] > 0.8
        again = Pipeline(cancer_spec, base_dir=cancer_csv.parent).run(client)
        assert again.step("load").cache_hit  # cached by the object's content
        cancer_spec["data"] = {"path": f"s3://{BUCKET}/data/nope.csv"}
        with pytest.raises(InvalidInput) as exc:
            Pipeline(cancer_spec, base_dir=cancer_csv.parent, source="modelloop.yaml").run(client)
        assert str(exc.value) == (
            f"modelloop.yaml: data.path: no such file s3://{BUCKET}/data/nope.csv"
        )
    finally:
        client.close()
