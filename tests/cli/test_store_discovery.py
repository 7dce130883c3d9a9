"""Which store a command uses when MODELLOOP_HOME is not set: the nearest ``.modelloop`` folder
in the current folder or its parents (as git finds ``.git``), else a new ``./.modelloop``; and a
note on stderr when the store was found in a parent folder or is new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelloop import Client, Settings
from modelloop.cli import app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breast_cancer) -> Path:
    """A project folder whose ``.modelloop`` store holds the model ``cancer`` (v1, champion),
    with MODELLOOP_HOME and the store variables unset."""
    for var in ("MODELLOOP_HOME", "MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELLOOP_USER", "tester")
    root = tmp_path / "project"
    (root / "src" / "deep").mkdir(parents=True)
    X, y = breast_cancer
    client = Client(Settings(home=root / ".modelloop"))
    try:
        with client.start_run("cancer") as run:
            run.log_model(LogisticRegression(max_iter=5000).fit(X, y), "model")
        client.register_model(run.run_id, "cancer")
        client.set_alias("cancer", "champion", 1)
    finally:
        client.close()
    return root


def test_the_nearest_store_in_the_folder_or_its_parents_is_found(project: Path) -> None:
    from modelloop._config import find_home

    assert find_home(project) == (project / ".modelloop", "here")
    assert find_home(project / "src" / "deep") == (project / ".modelloop", "parent")
    (project / "src" / ".modelloop").mkdir()
    assert find_home(project / "src" / "deep") == (project / "src" / ".modelloop", "parent")
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    assert find_home(elsewhere) == (elsewhere / ".modelloop", "new")
    # MODELLOOP_HOME, or a home given in code, wins over any folder found
    assert Settings.from_env(home=elsewhere).home_origin == "given"


def test_a_command_in_a_subfolder_uses_the_project_store_and_says_so_when_writing(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "src" / "deep")
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [m["name"] for m in json.loads(listed.stdout)["models"]] == ["cancer"]
    assert listed.stderr == ""  # reading the store one expects: nothing to say
    moved = runner.invoke(app, ["models", "alias", "set", "cancer", "staging", "1", "--json"])
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["version"] == 1  # stdout stays one JSON document
    note = " ".join(moved.stderr.split())
    assert f"using the store in {project / '.modelloop'} (found in a parent folder" in note
    assert not (project / "src" / "deep" / ".modelloop").exists()  # no stray empty store
    client = Client(Settings(home=project / ".modelloop"))
    try:
        assert client.get_registered_model("cancer").aliases == {"champion": 1, "staging": 1}
    finally:
        client.close()


def test_a_new_store_is_announced(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"models": []}
    note = " ".join(result.stderr.split())
    assert f"no .modelloop folder in {elsewhere} or its parents" in note
    assert f"new store in {elsewhere / '.modelloop'}" in note and "MODELLOOP_HOME" in note
    again = CliRunner().invoke(app, ["models", "list", "--json"])
    assert again.exit_code == 0 and again.stderr == ""  # now it is the folder's own store


def test_the_installed_command_finds_the_store_from_a_subfolder(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELLOOP_")}
    out = subprocess.run(
        [sys.executable, "-m", "modelloop", "models", "show", "cancer@champion", "--json"],
        cwd=project / "src" / "deep",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert [v["version"] for v in shown["versions"]] == [1]
    assert not (project / "src" / "deep" / ".modelloop").exists()
