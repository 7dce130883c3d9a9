"""Model cards and model diffs of three versions of the flights model, checked field by field
against what the registry and the pipeline stored (read here through the store directly, not
through the card's own reader):

v1  the quick example;  v2  a longer fit, gated against v1;  v3  plain gradient boosting on the
numeric features only, gated against v2 (a breaking signature change: three columns removed).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelloop import Client, Settings
from modelloop.pipeline import Pipeline
from modelloop.registry._card import build_card
from modelloop.registry._diff import diff_versions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flights" / "modelloop.yaml"
QUICK = {
    "data.args.sample": 3000,
    "model.params.max_iter": 30,
    "tune.n_trials": 2,
    "explain.max_rows": 100,
    "explain.n_local": 3,
    "gates.2": "segment_gap <= 0.5",  # per-carrier AUC on a few hundred test flights is noisy
}
NAME = "flights-delay"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    """A home with three versions registered by the example pipeline."""
    from threadpoolctl import threadpool_limits

    home = tmp_path_factory.mktemp("card") / "mlhome"
    client = Client(Settings(home=home, user="tester"))
    with threadpool_limits(1):
        for overrides in (
            {},
            {"model.params.max_iter": 60},
            {
                "features": ["day_of_week", "sched_dep_hour", "distance", "dep_delay"],
                "model.estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                "gates": ["auc >= 0.6"],
            },
        ):  # fmt: skip
            result = Pipeline.from_file(EXAMPLE, {**QUICK, **overrides}).run(client)
            assert result.status == "registered", result.reason
    yield client, home
    client.close()


def _steps(client: Client, version: int) -> dict[str, Any]:
    mv = client.get_model_version(NAME, version)
    parent = mv.tags["modelloop.pipeline_run_id"]
    page = client.search_runs(
        "flights-pipeline", filter=f"tags.`modelloop.parent_run_id` = '{parent}'"
    )
    return {r.tags["modelloop.step"]: r for r in page.items}


def _blob(client: Client, run_id: str, path: str) -> bytes:
    item = next(a for a in client.list_artifacts(run_id) if a.path == path)
    return client.artifacts.read_bytes(item.digest)


def _json(client: Client, version: int, step: str, file: str) -> Any:
    return json.loads(_blob(client, _steps(client, version)[step].run_id, f"outputs/{file}"))


def test_card_holds_the_stored_numbers(flights: tuple[Client, Path]) -> None:
    client, _ = flights
    card = build_card(client, NAME, 2).to_dict()
    evaluation = _json(client, 2, "evaluate", "evaluation.json")
    gates = _json(client, 2, "gate", "gates.json")
    champion = _json(client, 2, "gate", "champion_evaluation.json")
    explanation = _json(client, 2, "explain", "explanation.json")
    steps = _steps(client, 2)
    mv = client.get_model_version(NAME, 2)

    assert card["predicts"] == {
        "target": "delayed",
        "task": "classification",
        "classes": [0, 1],
        "features": ["day_of_week", "sched_dep_hour", "distance", "dep_delay", "carrier",
                     "origin", "dest"],
    }  # fmt: skip
    assert card["metrics"]["values"] == evaluation["metrics"]
    assert card["metrics"]["test_rows"] == evaluation["n_rows"]
    assert card["segments"]["columns"] == evaluation["segments"]
    assert card["segments"]["gaps"] == evaluation["segment_gaps"]
    assert card["fairness"]["values"] == evaluation["fairness"] == {}
    assert card["gates"]["results"] == gates["results"]
    assert card["gates"]["passed"] is True
    assert card["gates"]["champion"] == {"name": NAME, "version": 1}

    # comparison with the champion it was gated against: both scored on v2's test split
    cmp = card["comparison"]
    assert (cmp["a"], cmp["b"]) == (f"{NAME} v1", f"{NAME} v2")
    assert cmp["test_data"]["shared"] is True
    assert cmp["test_data"]["rows"] == evaluation["n_rows"]
    compared = {m["metric"]: m for m in cmp["metrics"]}
    assert set(compared) == set(evaluation["metrics"]) - {"p95_latency_ms"}
    for name, m in compared.items():
        assert m["b"] == evaluation["metrics"][name], name
        assert m["a"] == champion["metrics"][name], name  # the gate step's own numbers
        assert m["delta"] == pytest.approx(m["b"] - m["a"], abs=1e-12)
        if m["low"] is not None:
            assert m["low"] <= m["delta"] <= m["high"], name
    assert compared["auc"]["method"] == "DeLong"
    assert compared["log_loss"]["method"] == "paired bootstrap"
    assert compared["segment_gap"]["verdict"] == "no interval"
    assert cmp["latency"]["a"] == gates["paired_p95_latency_ms"]["champion"]
    assert cmp["latency"]["b"] == gates["paired_p95_latency_ms"]["candidate"]
    assert cmp["signature"] == [] and cmp["breaking"] is False
    assert {p["name"]: (p["a"], p["b"]) for p in cmp["params"]}["max_iter"] == ("30", "60")

    # explanations, data, signature, lineage
    top = sorted(explanation["global_importance"].items(), key=lambda kv: -abs(kv[1]))
    assert [(f["feature"], f["importance"]) for f in card["explanation"]["top_features"]] == top
    ds = client.store.list_run_datasets(mv.run_id)[-1].dataset
    train = pd.read_parquet(
        io.BytesIO(_blob(client, steps["split"].run_id, "outputs/train.parquet"))
    )
    td = card["training_data"]
    assert td["digest"] == ds.digest == mv.tags["modelloop.dataset_digest"]
    assert td["rows"] == ds.num_rows == len(train)
    assert pd.Timestamp(td["from"]) == train["date"].min()
    assert pd.Timestamp(td["to"]) == train["date"].max()
    assert td["split"]["cutoff"] == "2013-02-15"
    signature = json.loads(_blob(client, mv.run_id, "model/signature.json"))
    assert card["signature"]["inputs"] == signature["inputs"]
    assert card["onnx"] is None
    lineage = card["lineage"]
    assert lineage["params"] == dict(client.get_run(mv.run_id).params)
    assert lineage["package_digest"] == mv.tags["modelloop.package_digest"]
    assert lineage["pipeline_run"] == mv.tags["modelloop.pipeline_run_id"]
    assert {k: v["run"] for k, v in lineage["steps"].items()} == {
        k: r.run_id for k, r in steps.items()
    }
    meta = json.loads(_blob(client, mv.run_id, "model/metadata.json"))
    assert lineage["libraries"] == meta["libraries"]


def test_card_renders_the_same_numbers(flights: tuple[Client, Path]) -> None:
    client, _ = flights
    card = build_card(client, NAME, 2)
    evaluation = _json(client, 2, "evaluate", "evaluation.json")
    md, page = card.to_markdown(), card.to_html()
    order = [md.index(f"## {s}") for s in ("Summary", "Gates", "Compared with the champion",
             "Metrics", "Metrics per segment", "Fairness", "Top features", "Training data",
             "Signature", "ONNX form", "Lineage")]  # fmt: skip
    assert order == sorted(order)  # in the order a reviewer reads them
    for name, value in evaluation["metrics"].items():
        assert f"| {name} | {value:.4g} |" in md
        assert f"<td>{name}</td><td>{value:.4g}</td>" in page
    auc = card.to_dict()["comparison"]["metrics"][0]
    assert auc["metric"] == "auc"
    assert f"| auc | {auc['a']:.4g} | {auc['b']:.4g} | {auc['delta']:+.4g} |" in md
    # self-contained: nothing is fetched from elsewhere
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert page.startswith("<!doctype html>") and "<style>" in page


def test_register_step_stores_the_card(flights: tuple[Client, Path]) -> None:
    client, _ = flights
    register = _steps(client, 2)["register"].run_id
    md = _blob(client, register, "outputs/card.md").decode()
    page = _blob(client, register, "outputs/card.html").decode()
    auc = _json(client, 2, "evaluate", "evaluation.json")["metrics"]["auc"]
    assert md.startswith(f"# Model card: {NAME} v2")
    assert f"| auc | {auc:.4g} |" in md and f"<td>auc</td><td>{auc:.4g}</td>" in page
    assert f"## Compared with the champion {NAME} v1" in md
    first = _blob(client, _steps(client, 1)["register"].run_id, "outputs/card.md").decode()
    assert "No champion: this is the first version." in first


def test_removed_features_are_a_breaking_change(flights: tuple[Client, Path]) -> None:
    client, _ = flights
    diff = diff_versions(client, (NAME, 2), (NAME, 3))
    assert diff.breaking
    assert [(c.column, c.change, c.breaking) for c in diff.signature] == [
        ("carrier", "removed", True),
        ("origin", "removed", True),
        ("dest", "removed", True),
    ]
    classes = {d.name: (d.a, d.b) for d in diff.dependencies}["model class"]
    assert classes == (
        "sklearn.pipeline.Pipeline",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    )
    # v3's split lacks dest, so both are scored on v2's: the same rows, every column
    assert diff.test_data["from"] == f"{NAME} v2" and diff.test_data["shared"] is False
    v2 = _json(client, 2, "evaluate", "evaluation.json")["metrics"]
    v3 = _json(client, 3, "evaluate", "evaluation.json")["metrics"]
    assert diff.metric("auc").a == v2["auc"]
    assert diff.metric("auc").b == pytest.approx(v3["auc"], abs=1e-12)  # same rows, same model
    md = build_card(client, NAME, 3).to_markdown()
    assert "**BREAKING signature change** (3 of 3 changes)" in md
    assert "| dest | removed |" in md and "BREAKING" in md


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        MODELLOOP_HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        COLUMNS="250",
    )
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "modelloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_card_and_diff(flights: tuple[Client, Path], tmp_path: Path) -> None:
    client, home = flights
    done = _cli(["models", "diff", f"{NAME}/1", f"{NAME}/2", "--json"], home)
    assert done.returncode == 0, done.stderr
    diff = json.loads(done.stdout)
    v2 = _json(client, 2, "evaluate", "evaluation.json")["metrics"]
    v1_on_v2 = _json(client, 2, "gate", "champion_evaluation.json")["metrics"]
    got = {m["metric"]: m for m in diff["metrics"]}
    assert got["auc"]["a"] == v1_on_v2["auc"] and got["auc"]["b"] == v2["auc"]
    assert got["auc"]["method"] == "DeLong" and diff["breaking"] is False

    text = _cli(["models", "diff", f"{NAME}/2", f"{NAME}@champion"], home)
    assert text.returncode == 0, text.stderr
    assert "BREAKING signature change" in text.stdout and "| dest | removed |" in text.stdout

    out = tmp_path / "card.html"
    done = _cli(["models", "card", f"{NAME}/2", "--format", "html", "--out", str(out)], home)
    assert done.returncode == 0, done.stderr
    assert f"<td>auc</td><td>{v2['auc']:.4g}</td>" in out.read_text()
    done = _cli(["models", "card", f"{NAME}/2", "--json"], home)
    assert json.loads(done.stdout)["metrics"]["values"] == v2

    missing = _cli(["models", "card", f"{NAME}/9"], home)
    assert missing.returncode == 3 and "9" in missing.stderr
    bad = _cli(["models", "card", f"{NAME}/2", "--format", "pdf"], home)
    assert bad.returncode == 2 and "pdf" in bad.stderr


def test_card_shows_the_onnx_form(flights: tuple[Client, Path]) -> None:
    pytest.importorskip("skl2onnx")
    client, _ = flights
    done = client.convert_model(f"models:/{NAME}/3")
    assert done.converted, done.reason
    mv = client.get_model_version(NAME, 3)
    description = json.loads(client.artifacts.read_bytes(mv.tags["modelloop.onnx"]))
    card = build_card(client, NAME, 3, compare=False)
    assert card.to_dict()["onnx"] == {
        "attached": True,
        "onnx_sha256": description["onnx_sha256"],
        "check_rows": description["check_rows"],
        "libraries": description["libraries"],
    }
    assert card.to_dict()["comparison"] is None
    md = card.to_markdown()
    assert f"Attached: onnx sha256 {description['onnx_sha256']}" in md
    assert "No champion" not in md  # it had one; the comparison was just not asked for
