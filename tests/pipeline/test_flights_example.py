"""The example pipeline ``examples/flights/modelloop.yaml`` on a sample of the flights data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from modelloop.pipeline import Pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flights" / "modelloop.yaml"
QUICK = {
    "data.args.sample": 3000,
    "model.params.max_iter": 30,
    "explain.max_rows": 100,
    "explain.n_local": 3,
    "gates.2": "segment_gap <= 0.5",  # per-carrier AUC on a few hundred test flights is noisy
}


def _runs(client: Any, experiment: str, parent: str) -> dict[str, Any]:
    page = client.search_runs(experiment, filter=f"tags.`modelloop.parent_run_id` = '{parent}'")
    return {r.tags["modelloop.step"]: r for r in page.items}


def _frame(client: Any, run_id: str, path: str) -> pd.DataFrame:
    return pd.read_parquet(client.download_artifacts(run_id, path))


def test_example_spec_splits_by_time_and_gates_against_the_champion() -> None:
    spec = Pipeline.from_file(EXAMPLE).spec
    assert spec.split.method == "time" and spec.split.column == "date"
    assert spec.evaluation.segments == ["carrier", "origin"]
    assert any("champion" in g for g in spec.gates)
    assert spec.tuning and spec.register is not None


def test_flights_pipeline_with_tuning(client: Any) -> None:
    pipe = Pipeline.from_file(EXAMPLE, {**QUICK, "tune.n_trials": 2})
    result = pipe.run(client)
    assert [s.name for s in result.steps] == [
        "load", "validate", "split", "tune", "train", "evaluate", "explain", "gate", "register",
    ]  # fmt: skip
    assert result.status == "registered", result.reason
    runs = _runs(client, result.experiment, result.run_id)
    # time split: every training flight departs before every test flight
    train = _frame(client, runs["split"].run_id, "outputs/train.parquet")
    test = _frame(client, runs["split"].run_id, "outputs/test.parquet")
    assert train["date"].max() < pd.Timestamp("2013-02-15") <= test["date"].min()
    # tuning: two trials as child runs of the tune step; the best params reach training
    tune = runs["tune"].tags
    assert int(tune["modelloop.trials_complete"]) + int(tune["modelloop.trials_pruned"]) == 2
    trials = client.search_runs(
        result.experiment,
        filter=f"tags.`modelloop.parent_run_id` = '{runs['tune'].run_id}'",
    ).items
    assert len(trials) == 2
    best = json.loads(
        client.artifacts.read_bytes(
            next(
                a.digest
                for a in client.list_artifacts(runs["tune"].run_id)
                if a.path == "outputs/best_params.json"
            )
        )
    )
    assert set(best) <= {"learning_rate", "max_leaf_nodes", "min_samples_leaf"} and best
    for key, value in best.items():
        assert json.loads(runs["train"].params[key]) == value
    evaluation = json.loads(
        client.artifacts.read_bytes(
            next(
                a.digest
                for a in client.list_artifacts(runs["evaluate"].run_id)
                if a.path == "outputs/evaluation.json"
            )
        )
    )
    assert {"carrier", "origin"} <= set(evaluation["segments"])
    assert {r["value"] for r in evaluation["segments"]["origin"]} == {"EWR", "JFK", "LGA"}
    assert result.metrics["auc"] > 0.7
    assert client.resolve("models:/flights-delay@champion").version == 1


def test_flights_rerun_without_tuning_is_gated_against_the_champion(client: Any) -> None:
    quick = {**QUICK, "tune.enabled": False, "data.cache": False}
    first = Pipeline.from_file(EXAMPLE, quick).run(client)
    assert first.registered_version == 1
    cached = Pipeline.from_file(EXAMPLE, quick).run(client)
    # a callable source is read again every run; the same rows make every later step a hit
    hits = {s.name: s.cache_hit for s in cached.steps}
    assert hits.pop("load") is False and all(hits.values()), hits
    assert cached.step("load").output_digest == first.step("load").output_digest
    # a different candidate is compared with the champion on the same test flights
    other = Pipeline.from_file(EXAMPLE, {**quick, "model.params.max_iter": 40}).run(client)
    hits = {s.name: s.cache_hit for s in other.steps}
    assert hits["validate"] and hits["split"] and not hits["train"]
    gate = next(g for g in other.gates if "champion" in g["expr"])
    assert gate["bound"] is not None
    assert abs(gate["bound"] - (first.metrics["auc"] - 0.005)) < 1e-9
    assert gate["passed"] == (other.metrics["auc"] >= first.metrics["auc"] - 0.005)


def test_example_model_takes_every_tuned_hyperparameter() -> None:
    from modelloop.pipeline import build_model

    model = build_model(
        {"estimator": "flights_model.py:build_model", "params": {"max_iter": 7}},
        {"learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 40},
        base_dir=EXAMPLE.parent,
    )
    clf = model.named_steps["clf"]
    assert (clf.max_iter, clf.learning_rate, clf.max_leaf_nodes, clf.min_samples_leaf) == (
        7, 0.05, 15, 40,
    )  # fmt: skip
    assert clf.categorical_features == [4, 5, 6]  # carrier, origin, dest after the numerics
