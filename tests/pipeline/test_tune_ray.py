"""Tuning on a real Ray cluster (a head on 127.0.0.1): the workers are Ray tasks sharing the
study in the store's database, with the same trials as the local executor for one seed and
budget; a Ray address that does not answer stops the run before any step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import invoke_run

from modelloop import Client, SchemaMismatch, Settings
from modelloop.exceptions import ServiceUnavailable
from modelloop.pipeline._tune import TuneConfig, run_study, study_storage_url
from ray_support import ray_head as start_ray_head
from s3_support import free_port

pytest.importorskip("ray")

pytestmark = pytest.mark.slow

SPACE = {
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.5, "log": True},
    "max_depth": {"type": "int", "low": 1, "high": 3},
}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real local Ray head for the module."""
    with start_ray_head(tmp_path_factory.mktemp("raytune")) as address:
        yield address


def _trial_runs(client: Client, experiment: str, parent_id: str) -> list[Any]:
    page = client.search_runs(
        experiment, filter=f"tags.`modelloop.parent_run_id` = '{parent_id}'", max_results=500
    )
    return list(page)


def _inputs(tmp_path: Path, breast_cancer: Any, url: str) -> dict[str, Any]:
    X, y = breast_cancer
    frame = X.assign(target=y)
    train, valid = tmp_path / "train.parquet", tmp_path / "valid.parquet"
    frame.iloc[:400].to_parquet(train)
    frame.iloc[400:].to_parquet(valid)
    return {
        "store_url": url,
        "model_factory": "sklearn.ensemble:GradientBoostingClassifier",
        "base_params": {"n_estimators": 15, "random_state": 0},
        "train_path": train,
        "valid_path": valid,
        "target": "target",
        "features": list(X.columns),
        "task": "classification",
        "experiment": "tuning",
    }


def test_one_ray_worker_gives_the_trials_of_one_local_worker(
    ray_head: str, home: Path, tmp_path: Path, breast_cancer: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    common = _inputs(tmp_path, breast_cancer, url)
    client = Client(Settings.from_env(store_url=url))
    config = TuneConfig(
        metric="auc", direction="maximize", space=SPACE, n_trials=5, seed=3, report_steps=3
    )
    results, parents = {}, {}
    for executor in ("ray", "local"):
        with client.start_run("tuning", name=executor) as parent:
            pass
        parents[executor] = parent.run_id
        results[executor] = run_study(
            config,
            study_name=f"s-{executor}",
            parent_run_id=parent.run_id,
            executor=executor,
            ray_address=ray_head,
            **common,
        )
    on_ray, local = results["ray"], results["local"]
    assert on_ray.best_params == local.best_params
    assert on_ray.best_value == local.best_value
    assert [(t["number"], t["state"], t["params"], t["value"]) for t in on_ray.trials] == [
        (t["number"], t["state"], t["params"], t["value"]) for t in local.trials
    ]
    for executor, result in results.items():
        runs = _trial_runs(client, "tuning", parents[executor])
        assert len(runs) == 5
        assert {r.run_id for r in runs} == {t["run_id"] for t in result.trials}
    client.close()


def test_two_ray_workers_share_one_budget_on_postgresql(
    ray_head: str, home: Path, pg_url: str, tmp_path: Path, breast_cancer: Any
) -> None:
    client = Client(Settings.from_env(store_url=pg_url))
    with client.start_run("tuning", name="ray-2") as parent:
        pass
    config = TuneConfig(
        metric="auc", direction="maximize", space=SPACE, n_trials=6, seed=3, report_steps=3
    )
    result = run_study(
        config,
        study_name="s-ray-2",
        parent_run_id=parent.run_id,
        workers=2,
        executor="ray",
        ray_address=ray_head,
        **_inputs(tmp_path, breast_cancer, pg_url),
    )
    assert sorted(t["number"] for t in result.trials) == list(range(6))
    runs = _trial_runs(client, "tuning", parent.run_id)
    assert {r.run_id for r in runs} == {t["run_id"] for t in result.trials} and len(runs) == 6
    assert {t["worker"] for t in result.trials} <= {0, 1}
    client.close()


def test_a_failing_ray_task_reports_its_error_as_a_local_worker_does(
    ray_head: str, home: Path, tmp_path: Path, breast_cancer: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    inputs = _inputs(tmp_path, breast_cancer, url)
    config = TuneConfig(metric="auc", direction="maximize", space=SPACE, n_trials=4)
    with pytest.raises(SchemaMismatch, match=r"tuning worker \d of 2 failed.*no_such_column"):
        run_study(
            config,
            study_name="broken",
            workers=2,
            executor="ray",
            ray_address=ray_head,
            **{**inputs, "features": [*inputs["features"], "no_such_column"]},
        )


def _tuned_spec(cancer_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        **cancer_spec,
        "model": {
            "estimator": "sklearn.ensemble.GradientBoostingClassifier",
            "params": {"n_estimators": 15, "random_state": 0},
        },
        "tune": {"n_trials": 4, "seed": 5, "space": SPACE},
        "explain": {"max_rows": 30, "n_local": 1},
    }


def _pipeline_tuning(out: Any, home: Path) -> tuple[dict[str, Any], float, int]:
    """(best params, best value, trial runs) of the tune step of a ``--json`` pipeline run."""
    import optuna

    result = json.loads(out.stdout)
    tune = next(s for s in result["steps"] if s["name"] == "tune")
    client = Client(Settings.from_env())
    try:
        study_name = client.get_run(tune["run_id"]).tags["modelloop.study"]
        runs = _trial_runs(client, result["experiment"], tune["run_id"])
        storage = study_storage_url(client.settings.resolved_store_url)
    finally:
        client.close()
    study = optuna.load_study(study_name=study_name, storage=storage)
    return dict(study.best_params), float(study.best_value), len(runs)


def test_pipeline_run_with_the_ray_executor_tunes_as_the_local_one(
    ray_head: str,
    cli: Any,
    write_spec: Any,
    cancer_spec: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_spec(_tuned_spec(cancer_spec))
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT", "MODELLOOP_TRUSTED_TYPES"):
        monkeypatch.delenv(var, raising=False)
    found = {}
    for executor in ("ray", "local"):
        home = tmp_path / f"home-{executor}"
        monkeypatch.setenv("MODELLOOP_HOME", str(home))
        args = ["--executor", executor, "--json"]
        if executor == "ray":
            args += ["--ray-address", ray_head]
        out = invoke_run(cli, str(path), *args)
        assert out.exit_code == 0, out.output
        found[executor] = _pipeline_tuning(out, home)
    assert found["ray"] == found["local"]
    assert found["ray"][2] == 4


def test_a_ray_address_that_does_not_answer_stops_the_run_before_any_step(
    cli: Any, write_spec: Any, cancer_spec: dict[str, Any], home: Path
) -> None:
    path = write_spec(_tuned_spec(cancer_spec))
    address = f"127.0.0.1:{free_port()}"
    out = invoke_run(cli, str(path), "--executor", "ray", "--ray-address", address)
    assert out.exit_code == ServiceUnavailable.exit_code
    assert f"Ray cluster at {address}" in out.output
    client = Client(Settings.from_env())
    try:
        # no pipeline run was started: the experiment was never created
        assert "cancer" not in {e.name for e in client.store.list_experiments()}
    finally:
        client.close()
    # and an executor that does not exist is refused as invalid input
    out = invoke_run(cli, str(path), "--executor", "dask")
    assert out.exit_code == 2 and "--executor" in out.output


def test_a_sqlite_store_a_ray_node_does_not_see_is_named(tmp_path: Path) -> None:
    """A task on a node without the store's SQLite file refuses to go on (SQLAlchemy would
    create an empty database there) and says PostgreSQL is what a cluster needs."""
    from modelloop.exceptions import InvalidInput
    from modelloop.pipeline._ray import _check_reachable

    missing = tmp_path / "elsewhere" / "store.db"
    with pytest.raises(InvalidInput, match="PostgreSQL") as info:
        _check_reachable(f"sqlite:///{missing}")
    assert str(missing) in str(info.value)
    assert not missing.exists()
    present = tmp_path / "store.db"
    present.touch()
    _check_reachable(f"sqlite:///{present}")  # the same machine: goes on
