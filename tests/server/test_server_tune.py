"""A pipeline with a tune step against a real ``modelloop server``, the client given only the
server's URL and a token: the study lives in an Optuna journal in the client's home (the client
has no database), every trial is a child run stored by the server under the token's user, and a
later run with a larger budget goes on with the same study."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelloop.store._sql import SqlStore
from server_support import start_cli_server

FEATURES = ["mean_radius", "mean_texture", "mean_smoothness", "worst_area", "worst_concavity"]


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(server URL, store URL, a deployer's token) of a server over SQLite with users."""
    store_url = f"sqlite:///{tmp_path / 'server' / 'store.db'}"
    (tmp_path / "server").mkdir()
    store = SqlStore(store_url)
    store.create_user("root", "admin", actor="operator")
    store.create_user("tuner", "deployer", actor="root")
    token = store.create_token("tuner", "tuning", actor="root")[1]
    store.close()
    env = {
        "MODELLOOP_HOME": str(tmp_path / "server" / "home"),
        "MODELLOOP_STORE_URL": store_url,
        "MODELLOOP_ARTIFACT_ROOT": str(tmp_path / "server" / "artifacts"),
    }
    with start_cli_server(env) as (url, _proc):
        yield url, store_url, token


def _spec(folder: Path, breast_cancer: Any, n_trials: int) -> Path:
    X, y = breast_cancer
    frame = X.rename(columns=lambda c: c.replace(" ", "_"))[FEATURES].copy()
    frame["label"] = y.to_numpy()
    frame.to_csv(folder / "cancer.csv", index=False)
    spec = {
        "name": "cancer",
        "data": {"path": "cancer.csv"},
        "target": "label",
        "features": FEATURES,
        "split": {"method": "random", "test_size": 0.3, "seed": 1},
        "model": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"max_iter": 300},
        },
        "tune": {
            "study": "cancer-remote",
            "n_trials": n_trials,
            "workers": 2,
            "pruning": False,
            "space": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}},
        },
        "explain": {"enabled": False},
        "gates": ["auc >= 0.8"],
        "register": {"model_name": "cancer-tuned", "alias": "champion"},
    }
    path = folder / "modelloop.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _pipeline_run(home: Path, url: str, token: str, spec: Path, **overrides: Any) -> Any:
    """The pipeline in this process, its client given only the server's URL and a token (tuning
    workers are processes of their own: they get the token through their environment)."""
    from modelloop import Client, Settings
    from modelloop.pipeline import Pipeline

    client = Client(Settings(home=home, store_url=url, token=token))
    try:
        return Pipeline.from_file(spec, overrides=overrides).run(client)
    finally:
        client.close()


def _trial_runs(store: SqlStore, study: str) -> list[Any]:
    exp = store.get_experiment_by_name("cancer")
    page = store.search_runs(
        [exp.experiment_id], filter=f"tags.`modelloop.study` = '{study}'", max_results=100
    )
    return [r for r in page.items if "modelloop.trial_number" in r.tags]


def test_a_tuned_pipeline_through_the_server_keeps_its_study_on_the_client(
    team: tuple[str, str, str],
    tmp_path: Path,
    breast_cancer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the worker processes too: 2 shared cores
    url, store_url, token = team
    home = tmp_path / "laptop"
    project = tmp_path / "project"
    project.mkdir()

    spec = _spec(project, breast_cancer, n_trials=3)
    first = _pipeline_run(home, url, token, spec)
    assert first.status == "registered", first.reason

    store = SqlStore(store_url)  # what the server's own database holds
    try:
        exp = store.get_experiment_by_name("cancer")
        children = store.search_runs(
            [exp.experiment_id],
            filter=f"tags.`modelloop.parent_run_id` = '{first.run_id}'",
            max_results=50,
        ).items
        steps = {r.tags["modelloop.step"]: r for r in children if "modelloop.step" in r.tags}
        tune = steps["tune"]
        study = tune.tags["modelloop.study"]
        assert study.startswith("cancer-remote-")
        assert int(tune.tags["modelloop.trials_complete"]) == 3
        trials = _trial_runs(store, study)
        assert len(trials) == 3
        assert {t.user for t in trials} == {"tuner"}  # the token's user, not the laptop's
        assert {t.tags["modelloop.worker"] for t in trials} <= {"0", "1"}
        assert all(t.status.value == "FINISHED" and "auc" in t.metrics for t in trials)
        # the best trial's C is what the train step fitted with, and its score the best value
        best = max(trials, key=lambda t: t.metrics["auc"])
        assert float(tune.tags["modelloop.best_value"]) == pytest.approx(best.metrics["auc"])
        assert float(steps["train"].params["C"]) == pytest.approx(float(best.params["C"]))
        version = store.get_version_by_alias("cancer-tuned", "champion")
        assert version.user == "tuner"
    finally:
        store.close()
    # The study is in a journal in the laptop's home; the laptop kept no database.
    journals = list((home / "tune").glob("*.journal"))
    assert len(journals) == 1 and journals[0].stat().st_size > 0
    assert not list(home.rglob("*.db"))

    # A larger budget goes on with the same study from its journal: one more trial, not four.
    result = _pipeline_run(home, url, token, spec, **{"tune.n_trials": 4, "tune.workers": 1})
    # (the best trial may still be one of the first three: then the same model, unchanged)
    assert result.status in ("registered", "unchanged"), result.reason
    store = SqlStore(store_url)
    try:
        trials = _trial_runs(store, study)
        assert sorted(int(t.tags["modelloop.trial_number"]) for t in trials) == [0, 1, 2, 3]
        assert {t.user for t in trials} == {"tuner"}
    finally:
        store.close()
