"""``modelloop pipeline run``: exit codes, JSON output, progress and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from pipeline_support import invoke_run
from typer.testing import CliRunner

from modelloop.cli._pipeline import EXIT_GATE_FAILED, EXIT_VALIDATION_FAILED


def test_run_registers_then_everything_is_cached(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    path = write_spec(cancer_spec)
    first = invoke_run(cli, str(path), "--json")
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["status"] == "registered" and out["registered_version"] == 1 and out["ok"]
    assert [s["cache_hit"] for s in out["steps"]] == [False] * 8
    second = invoke_run(cli, str(path))
    assert second.exit_code == 0, second.output
    assert second.stdout.count("cached") >= 8  # progress lines and the summary table
    assert "registered cancer version 1 as @champion" in second.stdout
    assert "auc >= 0.8" in second.stdout


def test_failed_gate_exits_with_its_code_and_registers_nothing(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    from modelloop import Client, Settings
    from modelloop.exceptions import NotFound

    path = write_spec(cancer_spec)
    result = invoke_run(cli, str(path), "--set", "gates=[auc >= 1.01]", "--json")
    assert result.exit_code == EXIT_GATE_FAILED == 10
    out = json.loads(result.stdout)
    assert out["status"] == "gate_failed" and out["registered_version"] is None
    assert "auc >= 1.01" in out["reason"]
    client = Client(Settings.from_env())
    try:
        with pytest.raises(NotFound):
            client.get_registered_model("cancer")
    finally:
        client.close()
    text = invoke_run(cli, str(path), "--set", "gates=[auc >= 1.01]")
    assert text.exit_code == EXIT_GATE_FAILED
    assert "not registered" in text.stdout and "NO" in text.stdout


def test_validation_failure_exits_with_its_code_and_says_so_once(
    home: Path,
    cli: typer.Typer,
    write_spec: Any,
    cancer_spec: dict[str, Any],
    cancer_csv: Path,
) -> None:
    cancer_spec["explain"] = {"enabled": False}
    path = write_spec(cancer_spec)
    assert invoke_run(cli, str(path)).exit_code == 0
    frame = pd.read_csv(cancer_csv)
    frame["mean_texture"] = "n/a"  # a number column now holds text
    frame.to_csv(cancer_csv, index=False)
    result = invoke_run(cli, str(path))
    assert result.exit_code == EXIT_VALIDATION_FAILED == 11
    assert "data validation failed" in result.stderr and "mean_texture" in result.stderr
    assert result.stderr.count("data validation failed") == 1, result.stderr  # said once


def test_invalid_file_or_set_exits_2_with_the_location(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    path = write_spec(cancer_spec)
    result = invoke_run(cli, str(path), "--set", "split.test_size=2")
    assert result.exit_code == 2
    assert "modelloop.yaml: split.test_size:" in result.stderr
    missing = invoke_run(cli, str(path.parent / "other.yaml"))
    assert missing.exit_code == 3 and "no pipeline file" in missing.stderr


def test_help_documents_the_exit_codes(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["pipeline", "run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "10 when a gate failed" in text and "11 when data validation" in text
    assert "12 when the model was registered but its alias not moved" in text
    assert "--set" in text and "--no-cache" in text and "--workers" in text


def test_a_step_error_is_one_line_naming_the_step_and_exits_2(
    home: Path, cli: typer.Typer, write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    cancer_spec["task"] = "classification"
    path = write_spec(cancer_spec)
    # a column name that only the training data can refute (a wrong value such as
    # learning_rate=-0.1 is refused before any step: see test_preflight)
    result = invoke_run(cli, str(path), "--set", "model.params.categorical_features=[nope]")
    assert result.exit_code == 2
    assert "step train failed: ValueError" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.output
