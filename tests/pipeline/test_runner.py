"""Running pipelines: step runs and their tags, caching, validation stops, gates and
registration (SQLite store, breast-cancer data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelloop.exceptions import NotFound
from modelloop.pipeline import Pipeline, PipelineResult

ALL_STEPS = ["load", "validate", "split", "train", "evaluate", "explain", "gate", "register"]


def _pipeline(spec: dict[str, Any], base: Path, **overrides: Any) -> Pipeline:
    return Pipeline(spec, base_dir=base, overrides=overrides)


def _step_runs(client: Any, result: PipelineResult) -> dict[str, Any]:
    """The stored child runs of one pipeline run, by step name."""
    page = client.search_runs(
        result.experiment,
        filter=f"tags.`modelloop.parent_run_id` = '{result.run_id}'",
        max_results=50,
    )
    return {r.tags["modelloop.step"]: r for r in page.items}


def _artifact_json(client: Any, run_id: str, path: str) -> Any:
    items = {a.path: a for a in client.list_artifacts(run_id)}
    return json.loads(client.artifacts.read_bytes(items[path].digest))


def test_steps_are_child_runs_with_lineage_and_outputs(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    result = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert result.status == "registered" and result.ok
    assert [s.name for s in result.steps] == ALL_STEPS
    runs = _step_runs(client, result)
    assert sorted(runs) == sorted(ALL_STEPS)
    for s in result.steps:
        run = runs[s.name]
        assert run.run_id == s.run_id and run.status == "FINISHED"
        assert run.tags["modelloop.step_digest"] == s.digest
        assert run.tags["modelloop.cache_hit"] == "false"
    lineage = json.loads(runs["evaluate"].tags["modelloop.step_inputs"])
    assert lineage == {"train": runs["train"].run_id, "split": runs["split"].run_id}
    names = {a.path for a in client.list_artifacts(runs["split"].run_id)}
    assert names == {"outputs/train.parquet", "outputs/test.parquet"}
    assert "outputs/schema.json" in {a.path for a in client.list_artifacts(runs["validate"].run_id)}
    evaluation = _artifact_json(client, runs["evaluate"].run_id, "outputs/evaluation.json")
    assert evaluation["metrics"]["auc"] == pytest.approx(result.metrics["auc"])
    assert {r["value"] for r in evaluation["segments"]["size"]} == {"big", "small"}
    gates = _artifact_json(client, runs["gate"].run_id, "outputs/gates.json")
    assert gates["passed"] is True and gates["results"][0]["expr"] == "auc >= 0.8"
    mv = client.resolve("models:/cancer@champion")
    assert mv.version == result.registered_version == 1
    assert mv.run_id == runs["train"].run_id
    assert mv.tags["modelloop.schema_digest"] == runs["validate"].tags["modelloop.schema_digest"]
    test = pd.read_parquet(client.download_artifacts(runs["split"].run_id, "outputs/test.parquet"))
    assert len(test) == round(569 * 0.3)


def test_unchanged_rerun_hits_the_cache_for_every_step(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    first = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    second = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert [s.cache_hit for s in second.steps] == [True] * len(ALL_STEPS)
    runs = _step_runs(client, second)
    for s in first.steps:
        run = runs[s.name]
        assert run.tags["modelloop.cache_hit"] == "true"
        assert run.tags["modelloop.step_digest"] == s.digest
        assert run.tags["modelloop.cached_from"] == s.run_id
        # the reused outputs are the step run's own artifacts too
        assert {a.digest for a in client.list_artifacts(run.run_id)} == {
            a.digest for a in client.list_artifacts(s.run_id)
        }
    assert second.registered_version == 1
    assert len(client.list_model_versions("cancer")) == 1
    assert second.metrics == first.metrics
    # --no-cache recomputes every step
    third = _pipeline(cancer_spec, cancer_csv.parent).run(client, no_cache=True)
    assert [s.cache_hit for s in third.steps] == [False] * len(ALL_STEPS)


def test_changing_a_model_param_reruns_only_dependent_steps(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    first = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    changed = _pipeline(cancer_spec, cancer_csv.parent, **{"model.params.max_iter": 30}).run(client)
    hits = {s.name: s.cache_hit for s in changed.steps}
    assert hits == {
        "load": True,
        "validate": True,
        "split": True,
        "train": False,
        "evaluate": False,
        "explain": False,
        "gate": False,
        "register": False,
    }
    runs = _step_runs(client, changed)
    assert runs["train"].params["max_iter"] == "30"
    assert changed.registered_version == 2
    assert client.resolve("models:/cancer@champion").version == 2
    assert first.step("split").digest == changed.step("split").digest
    # an evaluation setting leaves training alone
    seg = _pipeline(
        cancer_spec,
        cancer_csv.parent,
        **{"model.params.max_iter": 30, "evaluation.min_segment_rows": 10},
    ).run(client)
    hits = {s.name: s.cache_hit for s in seg.steps}
    assert hits["train"] and hits["explain"] and not hits["evaluate"] and not hits["gate"]


def test_validation_failure_names_column_and_rule_and_stops_before_training(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from modelloop.pipeline._schema import DataValidationError

    _pipeline(cancer_spec, cancer_csv.parent).run(client)  # champion with its schema
    frame = pd.read_csv(cancer_csv)
    frame.loc[::3, "worst_area"] = None  # nulls where training data had none
    frame.to_csv(cancer_csv, index=False)
    with pytest.raises(DataValidationError) as exc:
        _pipeline(cancer_spec, cancer_csv.parent).run(client)
    message = str(exc.value)
    assert "worst_area" in message and "null" in message.lower()
    failed = client.search_runs(
        "cancer", filter="tags.`modelloop.pipeline_status` = 'validation_failed'"
    ).items
    assert len(failed) == 1 and failed[0].status == "FAILED"
    steps = client.search_runs(
        "cancer", filter=f"tags.`modelloop.parent_run_id` = '{failed[0].run_id}'"
    ).items
    assert {r.tags["modelloop.step"]: r.status for r in steps} == {
        "load": "FINISHED",
        "validate": "FAILED",
    }
    validate = next(r for r in steps if r.tags["modelloop.step"] == "validate")
    report = _artifact_json(client, validate.run_id, "outputs/validation.json")
    hard = [v for v in report["report"]["violations"] if v["severity"] == "hard"]
    assert [v["column"] for v in hard] == ["worst_area"]
    assert len(client.list_model_versions("cancer")) == 1


def test_failed_gate_registers_nothing(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["gates"] = ["auc >= 0.5", "auc >= 1.01"]
    result = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert result.status == "gate_failed" and not result.ok
    assert result.gates_passed is False and result.registered_version is None
    assert "auc >= 1.01" in (result.reason or "") and "auc >= 0.5" not in (result.reason or "")
    assert [g["passed"] for g in result.gates] == [True, False]
    with pytest.raises(NotFound):
        client.get_registered_model("cancer")
    runs = _step_runs(client, result)
    reg = _artifact_json(client, runs["register"].run_id, "outputs/register.json")
    assert reg["registered"] is False and "auc >= 1.01" in reg["reason"]
    assert reg["reason"] == result.reason  # the stored reason is the one the run reports
    parent = client.get_run(result.run_id)
    assert parent.tags["modelloop.pipeline_status"] == "gate_failed"


def test_gate_against_champion_on_the_same_evaluation_data(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["gates"] = ["auc >= 0.5", "auc >= champion - 0.005"]
    first = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert first.registered_version == 1
    assert first.gates[1]["passed"] and "no champion" in first.gates[1]["reason"]
    # a much weaker candidate: a single shallow tree
    weak = _pipeline(
        cancer_spec,
        cancer_csv.parent,
        **{"model.params.max_iter": 1, "model.params.max_depth": 1},
    ).run(client)
    assert weak.status == "gate_failed" and weak.registered_version is None
    champion_gate = weak.gates[1]
    assert champion_gate["passed"] is False
    runs = _step_runs(client, weak)
    champ_eval = _artifact_json(client, runs["gate"].run_id, "outputs/champion_evaluation.json")
    # the champion scored on the same test rows gives exactly its own first evaluation
    assert champ_eval["metrics"]["auc"] == pytest.approx(first.metrics["auc"], abs=1e-12)
    assert champion_gate["bound"] == pytest.approx(first.metrics["auc"] - 0.005)
    assert champion_gate["value"] == pytest.approx(weak.metrics["auc"])
    assert client.resolve("models:/cancer@champion").version == 1
    assert len(client.list_model_versions("cancer")) == 1


def test_random_split_default_features_and_no_register(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    features = cancer_spec.pop("features")
    del cancer_spec["register"]
    cancer_spec["explain"]["enabled"] = False
    cancer_spec["evaluation"]["segments"] = []
    pd.read_csv(cancer_csv).drop(columns="size").to_csv(cancer_csv, index=False)
    result = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert [s.name for s in result.steps] == [
        "load",
        "validate",
        "split",
        "train",
        "evaluate",
        "gate",
    ]
    assert result.status == "gates_passed" and result.registered_version is None
    runs = _step_runs(client, result)
    # every column but the target
    assert json.loads(runs["load"].tags["modelloop.features"]) == features


def test_parquet_and_sql_sources_with_the_same_rows_reuse_every_later_step(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    import sqlalchemy as sa

    frame = pd.read_csv(cancer_csv)
    frame.to_parquet(cancer_csv.with_suffix(".parquet"), index=False)
    db = cancer_csv.parent / "cancer.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    frame.to_sql("cancer", engine, index=False)
    engine.dispose()
    base = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    sources = [
        {"path": "cancer.parquet"},
        {"sql": "select * from cancer", "url": f"sqlite:///{db}"},
    ]
    for source in sources:
        result = _pipeline({**cancer_spec, "data": source}, cancer_csv.parent).run(client)
        hits = {s.name: s.cache_hit for s in result.steps}
        # a new source is read again; identical rows make every later step a cache hit
        assert hits.pop("load") is False and all(hits.values()), hits
        assert result.step("load").output_digest == base.step("load").output_digest
        assert result.registered_version == 1


WRAPPED = """
from sklearn.linear_model import LogisticRegression


class Wrapped(LogisticRegression):
    pass


def build(C=1.0):
    return Wrapped(C=C, max_iter=500)
"""


def test_a_custom_class_from_a_model_file_can_be_registered(
    home: Path, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from modelloop import Client, Settings

    (cancer_csv.parent / "wrapmod.py").write_text(WRAPPED, encoding="utf-8")
    cancer_spec["model"] = {"estimator": "wrapmod.py:build", "params": {}}
    cancer_spec["explain"] = {"enabled": False}
    client = Client(Settings.from_env(trusted_types=["wrapmod.Wrapped"]))
    try:
        result = _pipeline(cancer_spec, cancer_csv.parent).run(client)
        assert result.status == "registered", result.reason
        package = client.load_model("models:/cancer@champion")
        assert type(package.model).__module__ == "wrapmod"
        assert type(package.model).__name__ == "Wrapped"
    finally:
        client.close()


def test_the_resolved_spec_is_stored_with_the_pipeline_run(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["explain"] = {"enabled": False}
    result = _pipeline(cancer_spec, cancer_csv.parent, **{"model.params.max_iter": 7}).run(client)
    stored = _artifact_json(client, result.run_id, "spec.json")
    assert stored["model"]["params"]["max_iter"] == 7
    assert stored["model"]["estimator"] == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert stored["features"] == cancer_spec["features"]


def test_python_callables_run_and_hit_the_cache(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    def load() -> pd.DataFrame:
        return pd.read_csv(cancer_csv)

    spec = {
        **cancer_spec,
        "data": {"callable": load},
        "model": {"estimator": LogisticRegression, "params": {"max_iter": 500}},
        "explain": {"enabled": False},
    }
    first = Pipeline(spec).run(client)
    assert first.status == "registered", first.reason
    second = Pipeline(spec).run(client)
    hits = {s.name: s.cache_hit for s in second.steps}
    assert hits.pop("load") is False and all(hits.values()), hits
    stored = _artifact_json(client, first.run_id, "spec.json")
    assert stored["model"]["estimator"].endswith(":LogisticRegression")


def test_default_features_leave_out_segment_and_sensitive_columns(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    features = cancer_spec.pop("features")
    cancer_spec["explain"] = {"enabled": False}
    result = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    runs = _step_runs(client, result)
    assert json.loads(runs["load"].tags["modelloop.features"]) == features  # no "size"
    package = client.load_model(f"runs:/{runs['train'].run_id}/model")
    assert "size" not in package.signature.columns


def test_a_champion_without_a_schema_is_noted(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path, breast_cancer: Any
) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(cancer_csv)
    X, y = frame[cancer_spec["features"]], frame["label"]
    with client.start_run("outside") as run:
        client.log_model(run.run_id, LogisticRegression(max_iter=500).fit(X, y), "model")
    mv = client.register_model(run.run_id, "cancer")
    client.set_alias("cancer", "champion", mv.version)
    cancer_spec["explain"] = {"enabled": False}
    result = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert any("not validated" in n and "no stored schema" in n for n in result.notes)
    assert "not validated" in client.get_run(result.run_id).tags["modelloop.pipeline_notes"]


def test_a_fraction_time_split_keeps_equal_times_on_one_side() -> None:
    from modelloop.pipeline import SplitSpec
    from modelloop.pipeline._steps import split_frame

    frame = pd.DataFrame({"t": [1, 1, 2, 2, 2, 2, 3, 3, 3, 3], "y": range(10)})
    spec = SplitSpec(method="time", column="t", fraction=0.3)
    train, test = split_frame(frame, spec, "y", 0.3)
    assert train["t"].max() < test["t"].min()
    assert sorted(test["t"]) == [3, 3, 3, 3]
    assert len(train) + len(test) == len(frame)


def test_a_foreign_error_in_a_step_is_one_line_naming_the_step(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from modelloop.exceptions import InvalidInput

    cancer_spec["task"] = "classification"
    # a column name only the training data refutes (a wrong value is refused before any step)
    bad = _pipeline(cancer_spec, cancer_csv.parent, **{"model.params.categorical_features": ["x"]})
    with pytest.raises(InvalidInput, match=r"^step train failed: ValueError: ") as exc:
        bad.run(client)
    assert "\n" not in str(exc.value) and exc.value.__cause__ is not None


def test_a_fixed_study_name_is_joined_by_later_runs(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["explain"] = {"enabled": False}
    cancer_spec["tune"] = {
        "study": "cancer-shared",
        "n_trials": 2,
        "space": {"max_iter": {"type": "int", "low": 5, "high": 15}},
    }
    first = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    tune = _step_runs(client, first)["tune"]
    study = tune.tags["modelloop.study"]
    assert study.startswith("cancer-shared-")  # named for exactly this problem
    assert (
        int(tune.tags["modelloop.trials_complete"]) + int(tune.tags["modelloop.trials_pruned"]) == 2
    )
    more = _pipeline(cancer_spec, cancer_csv.parent, **{"tune.n_trials": 3}).run(client)
    assert not more.step("tune").cache_hit
    tags = _step_runs(client, more)["tune"].tags
    assert tags["modelloop.study"] == study
    # the same study went on: one more trial makes three in all
    assert int(tags["modelloop.trials_complete"]) + int(tags["modelloop.trials_pruned"]) == 3
    # another problem (fewer features) never reuses those trials: a study of its own
    other = _pipeline(
        cancer_spec,
        cancer_csv.parent,
        **{"tune.n_trials": 3, "features": cancer_spec["features"][:3]},
    ).run(client)
    tags = _step_runs(client, other)["tune"].tags
    assert tags["modelloop.study"] != study and tags["modelloop.study"].startswith("cancer-shared-")
    assert int(tags["modelloop.trials_complete"]) + int(tags["modelloop.trials_pruned"]) == 3


def test_tuning_a_class_given_in_python(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    spec = {
        **cancer_spec,
        "model": {"estimator": LogisticRegression, "params": {"max_iter": 500}},
        "tune": {"n_trials": 1, "space": {"C": {"type": "float", "low": 0.1, "high": 1.0}}},
        "explain": {"enabled": False},
    }
    result = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    assert result.status == "registered", result.reason
    tune = _step_runs(client, result)["tune"]
    assert int(tune.tags["modelloop.trials_complete"]) == 1


def test_register_with_onnx_attaches_the_form_checked_on_the_test_split(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    pytest.importorskip("skl2onnx")
    from modelloop.registry._onnx import ONNX_TAG

    cancer_spec["register"]["onnx"] = True
    cancer_spec["model"] = {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 20, "random_state": 0},
    }
    result = _pipeline(cancer_spec, cancer_csv.parent).run(client)

    assert result.status == "registered"
    assert result.onnx == {"converted": True, "reason": "", "check_rows": 171}  # 30% of 569
    mv = client.get_model_version("cancer", result.registered_version)
    assert mv.tags.get(ONNX_TAG) and mv.aliases == ("champion",)
    register_run = _step_runs(client, result)["register"]
    assert register_run.tags["modelloop.onnx"] == "converted"

    # a model skl2onnx cannot convert is registered all the same, with the reason recorded
    cancer_spec["model"] = {"estimator": "sklearn.dummy.DummyClassifier", "params": {}}
    cancer_spec["gates"] = ["auc >= 0.4"]
    declined = _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert declined.status == "registered" and declined.registered_version == 2
    assert declined.onnx is not None and declined.onnx["converted"] is False
    assert "DummyClassifier" in declined.onnx["reason"]
    assert ONNX_TAG not in client.get_model_version("cancer", 2).tags
    assert client.get_registered_model("cancer").aliases == {"champion": 2}


def test_register_with_onnx_needs_the_converter_before_any_step(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from modelloop.exceptions import InvalidInput

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "skl2onnx" else real(n, *a)
    )
    cancer_spec["register"]["onnx"] = True
    with pytest.raises(InvalidInput, match=r"pip install 'modelloop\[onnx\]'"):
        _pipeline(cancer_spec, cancer_csv.parent).run(client)
    assert not client.search_runs().items  # no run was made
