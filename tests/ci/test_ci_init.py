"""``modelloop ci init`` on the flights example: each provider's file is valid for that provider
(GitHub Actions and GitLab CI against their published schemas, vendored by check-jsonschema;
the Jenkinsfile parsed by Groovy, which needs no Jenkins server), a second call refuses without
--force, and no secret value from the environment ever reaches a generated file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ci_support import FLIGHTS, copy_example, modelloop

SECRETS = {
    "MODELLOOP_STORE_URL": "postgresql+psycopg://ml:s3cr3t-pw-471@db.internal:5432/ml",
    "MODELLOOP_ARTIFACT_ROOT": "s3://team-bucket-9f1c/modelloop",
    "MODELLOOP_TOKEN": "tok_live_0123456789abcdef0123",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY12345",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}
FILES = {
    "github": ".github/workflows/modelloop.yml",
    "gitlab": ".gitlab-ci.yml",
    "jenkins": "Jenkinsfile",
}
SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}


def _schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def repo(tmp_path: Path, home: Path) -> Path:
    return copy_example(tmp_path / "repo")


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_generated_file_is_valid_for_the_provider(repo: Path, provider: str) -> None:
    pytest.importorskip("check_jsonschema")
    done = modelloop(["ci", "init", "--provider", provider], cwd=repo)
    assert done.returncode == 0, done.stderr
    path = repo / FILES[provider]
    checked = _schema_check(SCHEMAS[provider], path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    doc = yaml.safe_load(path.read_text())
    if provider == "github":
        env = doc["env"]
        assert env["MODELLOOP_PIPELINE"] == "modelloop.yaml"
        assert env["MODELLOOP_MODEL"] == "flights-delay"  # from the register section
        assert env["MODELLOOP_STORE_URL"] == "${{ secrets.MODELLOOP_STORE_URL }}"
        assert env["MODELLOOP_TOKEN"] == "${{ secrets.MODELLOOP_TOKEN }}"
        assert doc[True]["schedule"] == [{"cron": "17 6 * * *"}]  # YAML 1.1 reads `on` as True
        steps = doc["jobs"]["pipeline"]["steps"]
        caches = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/cache")]
        assert caches == [".cache/pip", ".modelloop"]
        assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
        monitor = "\n".join(s.get("run", "") for s in doc["jobs"]["monitor"]["steps"])
        assert '"$MODELLOOP_MODEL@champion"' in monitor and "--fail-on-alert" in monitor
    else:
        assert doc["variables"]["MODELLOOP_PIPELINE"] == "modelloop.yaml"
        assert [c["paths"] for c in doc["default"]["cache"]] == [[".cache/pip"], [".modelloop"]]
        assert doc["modelloop-pipeline"]["artifacts"]["when"] == "always"
        assert "--fail-on-alert" in doc["modelloop-monitor"]["script"][0]
        assert doc["modelloop-monitor"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]


def test_schema_check_catches_a_broken_workflow(repo: Path) -> None:
    """The check above can fail: a job without runs-on is refused."""
    pytest.importorskip("check_jsonschema")
    assert modelloop(["ci", "init", "--provider", "github"], cwd=repo).returncode == 0
    path = repo / FILES["github"]
    text = path.read_text().replace("    runs-on: ubuntu-latest\n", "", 1)
    path.write_text(text)
    assert _schema_check(SCHEMAS["github"], path).returncode != 0


def _groovy() -> tuple[str, dict[str, str]]:
    groovy = shutil.which("groovy")
    java = shutil.which("java")
    if groovy is None or java is None:
        pytest.skip("groovy is not installed (apt-get install groovy): Jenkinsfile not parsed")
    env = dict(os.environ)
    env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parents[1])
    return groovy, env


_PARSE = "new GroovyShell().parse(new File(args[0])); println 'parsed'"


def test_jenkinsfile_parses_as_groovy(repo: Path) -> None:
    groovy, env = _groovy()
    assert modelloop(["ci", "init", "--provider", "jenkins"], cwd=repo).returncode == 0
    path = repo / "Jenkinsfile"
    done = subprocess.run(
        [groovy, "-e", _PARSE, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0 and "parsed" in done.stdout, done.stdout + done.stderr
    text = path.read_text()
    assert "credentials('modelloop-store-url')" in text
    assert "triggeredBy 'TimerTrigger'" in text
    # and the parse can fail: one brace too few
    path.write_text(text.rstrip().removesuffix("}"))
    broken = subprocess.run(
        [groovy, "-e", _PARSE, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert broken.returncode != 0


@pytest.mark.parametrize("provider", ["github", "gitlab", "jenkins"])
def test_refuses_to_overwrite_without_force_and_writes_no_secret(repo: Path, provider: str) -> None:
    env = {**SECRETS}
    first = modelloop(["ci", "init", "--provider", provider], cwd=repo, env=env)
    assert first.returncode == 0, first.stderr
    path = repo / FILES[provider]
    written = path.read_text()
    for name, value in SECRETS.items():
        assert value not in written, name
        assert value not in first.stdout + first.stderr
    assert "MODELLOOP_STORE_URL" in written and "MODELLOOP_TOKEN" in written
    path.write_text(written + "\n# a local edit\n")
    again = modelloop(["ci", "init", "--provider", provider], cwd=repo, env=env)
    assert again.returncode == 4
    assert "--force" in again.stderr and FILES[provider].split("/")[-1] in again.stderr
    assert path.read_text().endswith("# a local edit\n")  # untouched
    forced = modelloop(["ci", "init", "--provider", provider, "--force"], cwd=repo, env=env)
    assert forced.returncode == 0
    assert path.read_text() == written


def test_bad_options_are_named_before_anything_is_written(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((FLIGHTS / "modelloop.yaml").read_text())
    cases = [
        (["--provider", "circleci"], "circleci"),
        (["--provider", "github", "--pipeline", "missing.yaml"], "missing.yaml"),
        (["--provider", "github", "--pipeline", str(outside)], "outside"),
        (["--provider", "github", "--schedule", "every day"], "schedule"),
        (["--provider", "github", "--model", "bad name!"], "invalid model name"),
    ]
    for args, named in cases:
        done = modelloop(["ci", "init", *args], cwd=repo)
        assert done.returncode == 2, (args, done.stderr)
        assert named in done.stderr, (args, done.stderr)
    assert not (repo / ".github").exists() and not (repo / "Jenkinsfile").exists()


def test_readme_shows_the_workflow_ci_init_writes() -> None:
    import re

    from ci_support import ROOT

    from modelloop.ci import CiOptions, render_ci

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run it in CI") :]
    shown = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert shown is not None
    options = CiOptions("examples/flights/modelloop.yaml", "flights-delay", python="3.11")
    assert shown.group(1) == render_ci("github", options)


def test_every_provider_runs_the_steps_the_local_test_runs(repo: Path) -> None:
    """The GitHub steps are the ones run locally (test_ci_workflow_local); GitLab and Jenkins
    run the very same scripts."""
    for provider in FILES:
        assert modelloop(["ci", "init", "--provider", provider], cwd=repo).returncode == 0
    github = yaml.safe_load((repo / FILES["github"]).read_text())["jobs"]
    install, pipeline = (s["run"] for s in github["pipeline"]["steps"] if "run" in s)
    monitor = next(s["run"] for s in github["monitor"]["steps"] if s.get("name") == "Monitor")
    gitlab = yaml.safe_load((repo / FILES["gitlab"]).read_text())
    assert gitlab["default"]["before_script"] == [install]
    assert gitlab["modelloop-pipeline"]["script"] == [pipeline]
    assert gitlab["modelloop-monitor"]["script"] == [monitor]
    jenkins = (repo / "Jenkinsfile").read_text()
    for script in (install, pipeline, monitor):
        assert f"sh '''\n. .venv/bin/activate\n{script}'''" in jenkins
