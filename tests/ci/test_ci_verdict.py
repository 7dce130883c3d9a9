"""``modelloop ci verdict`` when the pipeline stopped before writing a result: the build log
says which exit code it was and what it means, and the report still has a verdict."""

from __future__ import annotations

from pathlib import Path

from ci_support import copy_example, edit_pipeline, modelloop


def test_verdict_of_a_pipeline_that_stopped(tmp_path: Path, home: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    edit_pipeline(repo / "modelloop.yaml", {("split", "method"): "sideways"})
    run = modelloop(["pipeline", "run", "modelloop.yaml", "--json"], cwd=repo)
    assert run.returncode == 2 and "split.method" in run.stderr
    (repo / "pipeline.json").write_text(run.stdout)
    out = repo / "report"
    done = modelloop(
        ["ci", "verdict", "pipeline.json", "--exit-code", str(run.returncode), "--out", "report"],
        cwd=repo,
        env={"GITHUB_ACTIONS": "true"},
    )
    assert done.returncode == 0, done.stderr
    expected = "the pipeline stopped (exit 2: the pipeline file or a --set value is invalid)"
    assert expected in done.stdout
    assert "::error title=modelloop::no result was written" in done.stdout
    verdict = (out / "verdict.md").read_text()
    assert expected in verdict and not (out / "card.md").exists()
