"""The CLI in-process with Typer's runner: JSON output, tables, errors and exit codes."""

from __future__ import annotations

import json

import pytest
from sklearn.linear_model import LogisticRegression
from typer.main import get_command
from typer.testing import CliRunner

from modelloop import Client
from modelloop.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def registered(client: Client, breast_cancer) -> str:
    X, y = breast_cancer
    model = LogisticRegression(max_iter=5000).fit(X, y)
    ids = []
    for _ in range(2):
        with client.start_run("cancer") as run:
            run.log_params({"C": 1.0})
            run.log_metric("acc", float(model.score(X, y)))
            run.log_model(model, "model", input_example=X.head(3))
        client.register_model(run.run_id, "cancer")
        ids.append(run.run_id)
    return ids[-1]


def test_runs_list_and_show(registered: str) -> None:
    res = invoke("runs", "list", "--json", "-e", "cancer", "-f", "metrics.acc > 0.5")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data["runs"]) == 2 and data["next_page_token"] is None
    assert data["runs"][0]["run_id"] == registered  # newest first
    res = invoke("runs", "list", "--max", "1", "--json")
    assert json.loads(res.stdout)["next_page_token"]
    res = invoke("runs", "show", registered, "--json")
    shown = json.loads(res.stdout)
    assert shown["run"]["params"] == {"C": "1.0"} and shown["run"]["status"] == "FINISHED"
    assert {a["path"] for a in shown["artifacts"]} >= {"model/metadata.json"}
    table = invoke("runs", "list")
    assert table.exit_code == 0 and registered in table.stdout


def test_models_list_show_and_alias_moves(registered: str, client: Client) -> None:
    res = invoke("models", "alias", "set", "cancer", "champion", "1", "--json")
    assert json.loads(res.stdout) == {
        "name": "cancer",
        "alias": "champion",
        "version": 1,
        "previous": None,
    }
    res = invoke("models", "alias", "set", "cancer", "champion", "2")
    assert res.exit_code == 0 and "was 1" in res.stdout
    models = json.loads(invoke("models", "list", "--json").stdout)["models"]
    assert models[0]["aliases"] == {"champion": 2} and models[0]["latest_version"] == 2
    shown = json.loads(invoke("models", "show", "cancer", "--json").stdout)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][1]["aliases"] == ["champion"]
    res = invoke("models", "alias", "delete", "cancer", "champion", "--json")
    assert json.loads(res.stdout)["version"] == 2
    assert client.get_registered_model("cancer").aliases == {}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("runs", "show", "0" * 32), 3, "0" * 32),
        (("models", "show", "missing"), 3, "missing"),
        (("models", "alias", "set", "cancer", "champion", "9"), 3, "9"),
        (("models", "alias", "set", "cancer", "12", "1"), 2, "12"),
        (("runs", "list", "-f", "metrics.acc >> 1"), 2, ">>"),
    ],
)
def test_errors_name_the_problem_and_exit_non_zero(registered, args, code, needle) -> None:
    res = invoke(*args)
    assert res.exit_code == code, res.output
    assert "error:" in res.stderr and needle in res.stderr


def test_db_upgrade_reports_the_revision(home) -> None:
    res = invoke("db", "upgrade", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["revision"] and data["store_url"].startswith("sqlite:///")
    assert (home / "modelloop.db").is_file()


def _walk(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def test_every_command_and_option_has_help() -> None:
    commands = list(_walk(get_command(app)))
    names = {" ".join(path) for path, _ in commands}
    assert {"runs list", "models alias set", "monitor run", "db upgrade", "quickstart"} <= names
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"command {' '.join(path) or 'modelloop'} has no help"
        for param in cmd.params:
            if param.param_type_name == "option" and param.name not in {
                "install_completion",
                "show_completion",
                "help",
            }:
                assert (param.help or "").strip(), f"{' '.join(path)} {param.opts} has no help"


def test_user_text_is_printed_literally_never_as_markup(client: Client) -> None:
    with client.start_run("exp", name="[/x] [red]bold[/red]") as run:
        run.set_tag("note", "[bold]not bold[/bold]")
    res = invoke("runs", "list")
    assert res.exit_code == 0, res.output
    res = invoke("runs", "show", run.run_id)
    assert res.exit_code == 0 and "[bold]not bold[/bold]" in res.stdout
    res = invoke("models", "show", "[/x]")  # not a model name: refused, and printed as given
    assert res.exit_code == 2 and "[/x]" in res.stderr


def test_store_urls_are_printed_without_passwords() -> None:
    from modelloop._config import redact_url

    assert redact_url("postgresql+psycopg://me:s3cret@db/ml") == "postgresql+psycopg://me:***@db/ml"


def test_gc_removes_only_old_leftovers(client: Client) -> None:
    import os
    import time

    tmp_dir = client.settings.home / "artifacts" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    old, fresh = tmp_dir / "old.part", tmp_dir / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    stale = client.settings.home / "cache" / "models" / ".abc.stale.1"
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    res = invoke("gc", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"artifact_temp_files": 1, "model_cache_leftovers": 1}
    assert not old.exists() and fresh.exists() and not stale.exists()


@pytest.mark.parametrize(
    "args, hidden, extra",
    [
        (["serve", "fraud@champion"], "uvicorn", "serve"),
        (["serve", "fraud@champion", "--onnx"], "onnxruntime", "onnx"),
        (["pipeline", "run", "modelloop.yaml"], "yaml", "pipeline"),
    ],
)
def test_a_missing_extra_is_named_with_the_install_command(
    home, monkeypatch: pytest.MonkeyPatch, args: list[str], hidden: str, extra: str
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a)
    )
    result = invoke(*args)
    assert result.exit_code == 2
    assert f"pip install 'modelloop[{extra}]'" in " ".join(result.output.split())


def test_models_convert_attaches_or_declines_with_exit_codes(
    client: Client, breast_cancer, tmp_path
) -> None:
    pytest.importorskip("skl2onnx")
    from sklearn.dummy import DummyClassifier

    from modelloop.registry._onnx import ONNX_TAG

    X, y = breast_cancer
    for model in (LogisticRegression(max_iter=5000), DummyClassifier()):
        with client.start_run("cancer") as run:
            run.log_model(model.fit(X, y), "model", input_example=X.head(3))
        client.register_model(run.run_id, "cancer")
    check = tmp_path / "check.parquet"
    X.head(100).assign(label=y.head(100)).to_parquet(check)

    res = invoke("models", "convert", "cancer/1", "--check-data", str(check), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["converted"] is True and out["check_rows"] == 100 and out["version"] == 1
    assert client.get_model_version("cancer", 1).tags.get(ONNX_TAG)
    table = invoke("models", "show", "cancer")
    assert "onnx" in table.stdout and "yes" in table.stdout

    res = invoke("models", "convert", "cancer/2")
    assert res.exit_code == 1
    assert "not converted" in res.stdout and "DummyClassifier" in " ".join(res.stdout.split())
    assert ONNX_TAG not in client.get_model_version("cancer", 2).tags

    res = invoke("models", "convert", "cancer/1", "--check-data", str(tmp_path / "nope.csv"))
    assert res.exit_code == 2 and "no such data file" in res.output


def test_models_show_takes_an_alias_or_a_version(registered: str, client: Client) -> None:
    client.set_alias("cancer", "champion", 1)
    shown = json.loads(invoke("models", "show", "cancer@champion", "--json").stdout)
    assert shown["model"]["name"] == "cancer"
    assert [v["version"] for v in shown["versions"]] == [1]
    assert shown["versions"][0]["aliases"] == ["champion"]
    shown = json.loads(invoke("models", "show", "cancer/2", "--json").stdout)
    assert [v["version"] for v in shown["versions"]] == [2]
    table = invoke("models", "show", "cancer@champion")
    assert table.exit_code == 0 and "champion" in table.stdout
    missing = invoke("models", "show", "cancer@nope")
    assert missing.exit_code == 3 and "has no alias 'nope'" in missing.stderr
    unknown = invoke("models", "show", "nope@champion")
    assert unknown.exit_code == 3
    assert "registered model 'nope' does not exist" in " ".join(unknown.stderr.split())


def _modelloop(home, *args: str, prelude: str = "", **env: str):
    """``python -m modelloop ARGS`` in a real process (after running ``prelude``)."""
    import os
    import subprocess
    import sys

    argv = f"sys.argv = ['modelloop', *{list(args)!r}]"
    code = "\n".join([prelude, "import sys", "from modelloop.cli import main", argv, "main()"])
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MODELLOOP_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serving_an_unknown_model_says_there_is_no_such_model(home) -> None:
    pytest.importorskip("uvicorn")
    out = _modelloop(home, "serve", "nope@champion", "--port", "0")
    assert out.returncode == 3, out.stderr
    assert "error: registered model 'nope' does not exist" in out.stderr
    assert "has no alias" not in out.stderr and "Traceback" not in out.stderr


def test_a_postgresql_url_without_the_driver_is_one_line_naming_the_extra(home) -> None:
    # psycopg made unimportable, as in an install without the postgres extra
    out = _modelloop(
        home,
        "runs",
        "list",
        prelude="import sys\nsys.modules['psycopg'] = None",
        MODELLOOP_STORE_URL="postgresql://someone:secret@127.0.0.1:5432/ml",
    )
    assert out.returncode == 2, out.stderr
    text = " ".join(out.stderr.split())
    assert text.startswith("error: store URL postgresql+psycopg://someone:***@127.0.0.1:5432/ml")
    assert "needs the PostgreSQL driver psycopg" in text
    assert "pip install 'modelloop[postgres]'" in text
    assert "Traceback" not in out.stderr and "secret" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3  # one message (wrapped at 80 columns)


def test_check_data_given_as_a_url_is_not_mangled(
    client: Client, breast_cancer, tmp_path, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("skl2onnx")
    from s3_support import BUCKET

    X, y = breast_cancer
    with client.start_run("cancer") as run:
        run.log_model(LogisticRegression(max_iter=5000).fit(X, y), "model", input_example=X.head(3))
    client.register_model(run.run_id, "cancer")
    check = tmp_path / "check.parquet"
    X.head(60).to_parquet(check)
    res = invoke("models", "convert", "cancer/1", "--check-data", check.as_uri(), "--json")
    assert res.exit_code == 0, res.output  # file:///... read as a URL
    assert json.loads(res.stdout)["check_rows"] == 60
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    s3_server.client().put_object(Bucket=BUCKET, Key="check/rows.parquet", Body=check.read_bytes())
    url = f"s3://{BUCKET}/check/rows.parquet"
    res = invoke("models", "convert", "cancer/1", "--check-data", url, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["check_rows"] == 60
    res = invoke("models", "convert", "cancer/1", "--check-data", f"s3://{BUCKET}/check/no.csv")
    assert res.exit_code == 2
    assert f"no such data file: s3://{BUCKET}/check/no.csv" in " ".join(res.stderr.split())


def test_quickstart_finds_a_missing_bucket_before_training(
    home, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("MODELLOOP_ARTIFACT_ROOT", "s3://no-such-bucket/ml")
    started = time.perf_counter()
    res = invoke("quickstart", "--json")
    assert res.exit_code == 7, res.output
    text = " ".join(res.stderr.split())
    assert (
        "the bucket 'no-such-bucket' does not exist" in text and "MODELLOOP_ARTIFACT_ROOT" in text
    )
    assert time.perf_counter() - started < 15  # not after training
    from modelloop import Settings

    c = Client(Settings.from_env(artifact_root=str(home / "artifacts")))
    try:
        assert not c.search_runs().items  # nothing was started
    finally:
        c.close()


def test_runs_gc_ends_stale_runs_only_as_failed_or_killed(client: Client) -> None:
    exp = client.store.get_or_create_experiment("gc")
    stale = client.store.create_run(exp.experiment_id, start_time=1000)  # no owner, long ago
    refused = invoke("runs", "gc", "--status", "running")
    assert refused.exit_code == 2 and "--status must be FAILED or KILLED" in refused.stderr
    assert client.store.get_run(stale.run_id).status.value == "RUNNING"
    res = invoke("runs", "gc", "--status", "killed", "--json")
    assert res.exit_code == 0, res.output
    assert [r["run_id"] for r in json.loads(res.stdout)["ended"]] == [stale.run_id]
    assert client.store.get_run(stale.run_id).status.value == "KILLED"
