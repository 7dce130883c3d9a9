"""``modelloop deploy k8s`` end to end on a real SQLite store: the model and alias are checked,
the RSS comes from the ops history, the files are valid, unknown models exit non-zero."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from deploy.k8s_support import by_kind, validate_any
from modelloop import Client, Settings
from modelloop.aiops import write_ops_history
from modelloop.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module: ``cancer`` and ``sized`` registered, @champion set."""
    from sklearn.datasets import load_breast_cancer

    home = tmp_path_factory.mktemp("deploy") / "mlhome"
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=5000).fit(X, y)
    client = Client(Settings(home=home))
    try:
        with client.start_run("cancer") as run:
            run.log_model(model, "model", input_example=X.head(3))
        for name in ("cancer", "sized"):
            version = client.register_model(run.run_id, name).version
            client.set_alias(name, "champion", version)
    finally:
        client.close()
    return home


@pytest.fixture
def home(store_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELLOOP_HOME", str(store_home))
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT", "MODELLOOP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return store_home


@pytest.fixture
def champion(home: Path) -> int:
    return 1


def deploy(*args: str):
    return runner.invoke(app, ["deploy", "k8s", *args])


def test_writes_valid_manifests_for_a_registered_alias(champion: int, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    res = deploy(
        "cancer@champion",
        "--out",
        str(out),
        "--image",
        "registry.example/modelloop:1",
        "--port",
        "9000",
        "--min-replicas",
        "2",
        "--max-replicas",
        "6",
        "--namespace",
        "ml",
        "--json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["model"], data["version"], data["rss_bytes"]) == ("cancer", champion, None)
    assert any("no RSS recorded" in n for n in data["notes"])
    assert any("SQLite file on this machine" in n for n in data["notes"])
    files = [Path(f) for f in data["files"]]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in files]
    manifests = [yaml.safe_load(p.read_text()) for p in files]
    assert manifests == data["manifests"]
    for manifest in manifests:
        validate_any(manifest)
        assert manifest["metadata"]["namespace"] == "ml"
    kinds = by_kind(manifests)
    c = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.example/modelloop:1"
    assert c["args"][:2] == ["serve", "cancer@champion"] and c["ports"][0]["containerPort"] == 9000
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert [t["type"] for t in kinds["ScaledObject"]["spec"]["triggers"]] == ["cpu"]

    table = deploy("cancer/1", "--out", str(tmp_path / "v1"))
    assert table.exit_code == 0, table.output
    assert "wrote 4 files" in table.stdout and "kubectl apply -f" in table.stdout


def test_memory_is_sized_from_the_recorded_rss(champion: int, home: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    rss = [400, 520, 610, 480]
    write_ops_history(
        home,
        "sized",
        pd.DataFrame(
            {
                "timestamp": [now - timedelta(seconds=10 * (4 - i)) for i in range(4)],
                "requests": [5, 6, 7, 8],
                "rss_bytes": [r * 2**20 for r in rss],
            }
        ),
    )
    res = deploy("sized@champion", "--out", str(tmp_path / "k8s"), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["rss_bytes"] == 610 * 2**20
    assert not any("no RSS" in n for n in data["notes"])
    c = by_kind(data["manifests"])["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"]["memory"] == f"{math.ceil(610 * 1.25)}Mi"
    assert c["resources"]["limits"]["memory"] == "1220Mi"


@pytest.mark.parametrize(
    ("spec", "code", "needle"),
    [
        ("nope@champion", 3, "'nope'"),
        ("cancer@missing", 3, "no alias 'missing'"),
        ("cancer/9", 3, "9"),
        ("bad name", 2, "not a model name"),
    ],
)
def test_an_unknown_model_is_a_clear_error(
    champion: int, tmp_path: Path, spec: str, code: int, needle: str
) -> None:
    out = tmp_path / "k8s"
    res = deploy(spec, "--out", str(out), "--json")
    assert res.exit_code == code, res.output
    assert "error:" in res.stderr and needle in " ".join(res.stderr.split())
    assert res.stdout == "" and not out.exists()  # nothing written for a model not served


def test_bad_replica_bounds_exit_2(champion: int, tmp_path: Path) -> None:
    res = deploy("cancer@champion", "--min-replicas", "4", "--max-replicas", "2")
    assert res.exit_code == 2 and "above max_replicas" in res.stderr
