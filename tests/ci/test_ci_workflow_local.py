"""The generated GitHub workflow's ``run:`` steps, run locally in order with bash as GitHub runs
them (``bash --noprofile --norc -eo pipefail``), in a copy of the flights example, against a
team store on the real PostgreSQL server given as the workflow's secret.

The Python environment is this test's own (``sys.executable``): the workflow's install step
installs nothing when ``MODELLOOP_CI_READY=1`` says the environment is ready, which is what a
runner image with modelloop preinstalled sets too. A fresh virtual environment per test run
would cost minutes of installs on a two-core machine and prove only that pip works.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from ci_support import copy_example, edit_pipeline, modelloop, source_env

from modelloop.data import load_flights

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

_EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def _resolve(value: str, contexts: dict[str, str]) -> str:
    """A workflow value with its ``${{ ... }}`` expressions replaced as GitHub would; an
    expression this test does not know fails it (the run scripts must not need any)."""

    def one(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr in contexts:
            return contexts[expr]
        if expr.startswith(("secrets.", "vars.")):
            return ""  # an unset secret or variable is the empty string
        raise AssertionError(f"unexpected expression ${{{{ {expr} }}}} in a workflow value")

    return _EXPR.sub(one, str(value))


def _shims(folder: Path) -> Path:
    """``python`` and ``modelloop`` on PATH, both this test's interpreter."""
    folder.mkdir()
    for name, tail in (("python", '"$@"'), ("modelloop", '-m modelloop "$@"')):
        path = folder / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {tail}\n')
        path.chmod(0o755)
    return folder


def _run_steps(
    repo: Path,
    secrets: dict[str, str],
    tmp: Path,
    job_name: str = "pipeline",
    variables: dict[str, str] | None = None,
) -> tuple[int, str, list[str]]:
    """Run a job's run steps in order; (exit code of the last one run, their output, the step
    names run)."""
    import subprocess

    doc = yaml.safe_load((repo / ".github/workflows/modelloop.yml").read_text())
    contexts = {
        "github.workspace": str(repo),
        **{f"secrets.{k}": v for k, v in secrets.items()},
        **{f"vars.{k}": v for k, v in (variables or {}).items()},
    }
    job = doc["jobs"][job_name]
    env = {k: _resolve(v, contexts) for k, v in {**doc["env"], **job.get("env", {})}.items()}
    tmp.mkdir()
    summary = tmp / "step-summary.md"
    env |= {
        "MODELLOOP_CI_READY": "1",
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "MODELLOOP_USER": "ci",
    }
    full = source_env(env)
    full["PATH"] = f"{tmp.parent / 'bin'}:{full['PATH']}"
    output, names, code = [], [], 0
    for i, step in enumerate(s for s in job["steps"] if "run" in s):
        assert "${{" not in step["run"], step["name"]  # values come in through env only
        script = tmp / f"step-{i}.sh"
        script.write_text(step["run"])
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=repo,
            env=full,
            capture_output=True,
            text=True,
            timeout=600,
        )
        names.append(step["name"])
        output.append(done.stdout + done.stderr)
        code = done.returncode
        if code != 0:
            break
    return code, "\n".join(output), names


def _client(pg_url: str, artifacts: Path) -> Any:
    from modelloop import Client, Settings

    return Client(Settings.from_env(store_url=pg_url, artifact_root=str(artifacts)))


def test_github_steps_pass_a_good_change_and_fail_a_gate_breaking_one(
    tmp_path: Path, home: Path, pg_url: str
) -> None:
    repo = copy_example(tmp_path / "repo")
    assert modelloop(["ci", "init", "--provider", "github"], cwd=repo).returncode == 0
    _shims(tmp_path / "bin")
    artifacts = tmp_path / "team-artifacts"
    secrets = {"MODELLOOP_STORE_URL": pg_url, "MODELLOOP_ARTIFACT_ROOT": str(artifacts)}

    # a passing change: exit 0, the version registered in the team's store, the report kept
    code, out, names = _run_steps(repo, secrets, tmp_path / "first")
    assert names == ["Install", "Run the pipeline"]
    assert code == 0, out
    assert "nothing installed" in out
    assert "every gate passed; registered flights-delay v1 as @champion" in out
    report = repo / "modelloop-report"
    result = json.loads((report / "pipeline.json").read_text())
    assert result["status"] == "registered" and result["registered_version"] == 1
    client = _client(pg_url, artifacts)
    try:
        assert client.resolve("models:/flights-delay@champion").version == 1
        card = (report / "card.md").read_text()
        auc = client.get_run(result["run_id"]).metrics["auc"]
        assert "# Model card: flights-delay v1" in card and f"| auc | {auc:.4g} |" in card
        assert "<script" not in (report / "card.html").read_text()
        assert "every gate passed" in (tmp_path / "first" / "step-summary.md").read_text()

        # the same commit again: every step is looked up in the team store's cache
        code, out, _ = _run_steps(repo, secrets, tmp_path / "again")
        assert code == 0, out
        again = json.loads((report / "pipeline.json").read_text())
        assert all(s["cache_hit"] for s in again["steps"]) and again["registered_version"] == 1
        assert [v.version for v in client.list_model_versions("flights-delay")] == [1]

        # a change that breaks a gate: the gate's exit code, the reason in the log
        first_auc = result["metrics"]["auc"]
        changes = {("model", "params", "max_iter"): 20, ("gates", 0): "auc >= 0.99"}
        edit_pipeline(repo / "modelloop.yaml", changes)
        code, out, names = _run_steps(repo, secrets, tmp_path / "second")
        assert code == 10, out
        assert names == ["Install", "Run the pipeline"]
        reason = re.search(r"reason: (gate failed: auc >= 0\.99 \(auc = [0-9.]+.*failed\))", out)
        assert reason is not None, out
        assert f"::error title=modelloop::{reason.group(1)}" in out
        assert "FAILED  auc >= 0.99: auc = " in out
        # the failed candidate next to the champion, on the same test rows
        verdict = (report / "verdict.md").read_text()
        assert "# flights-delay candidate compared with flights-delay v1" in out
        auc = json.loads((report / "pipeline.json").read_text())["metrics"]["auc"]
        assert f"| auc | {first_auc:.4g} | {auc:.4g} | {auc - first_auc:+.4g} |" in verdict
        assert "| max_iter | 30 | 20 |" in verdict and "Signature: unchanged." in verdict
        result = json.loads((report / "pipeline.json").read_text())
        assert result["status"] == "gate_failed" and result["registered_version"] is None
        # unchanged data: the steps before the model came from the team store's cache (tuning
        # reruns: the model's parameters are part of its problem)
        hits = [s["name"] for s in result["steps"] if s["cache_hit"]]
        assert hits == ["load", "validate", "split"]
        assert client.resolve("models:/flights-delay@champion").version == 1
        assert [v.version for v in client.list_model_versions("flights-delay")] == [1]
        assert "a gate failed" in (tmp_path / "second" / "step-summary.md").read_text()

        # the scheduled job: the champion's inputs as trained pass; July's flights (new
        # destinations) fire an alert and fail it with the alert's exit code
        split = _steps_of(client, result["run_id"])["split"]
        trained = tmp_path / "as-trained.parquet"
        pd.read_parquet(client.download_artifacts(split, "outputs/train.parquet")).to_parquet(
            trained
        )
        july = tmp_path / "july.parquet"
        load_flights([7]).sample(2000, random_state=0).to_parquet(july)
        monitor = ("monitor", {"MODELLOOP_MONITOR_DATA": str(trained)})
        code, out, names = _run_steps(repo, secrets, tmp_path / "quiet", *monitor)
        assert names == ["Install", "Monitor"]
        assert code == 0, out
        assert "flights-delay: v1 (2,222 rows)" in (report / "monitor.html").read_text()
        (report / "monitor.html").unlink()
        monitor = ("monitor", {"MODELLOOP_MONITOR_DATA": str(july)})
        code, out, names = _run_steps(repo, secrets, tmp_path / "july", *monitor)
        assert code == 10, out
        assert "alerts firing: quality_breach" in out and "dest: unseen_categories" in out
        assert (report / "monitor.html").is_file()  # the report is kept when the job fails
    finally:
        client.close()


def _steps_of(client: Any, parent: str) -> dict[str, str]:
    page = client.search_runs(
        "flights-pipeline", filter=f"tags.`modelloop.parent_run_id` = '{parent}'"
    )
    return {r.tags["modelloop.step"]: r.run_id for r in page.items}
