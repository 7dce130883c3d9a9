"""Tuning: Optuna studies in the store's database, shared budgets, pruning, trials as child runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelloop import Client, Conflict, InvalidInput, SchemaMismatch, Settings
from modelloop.pipeline._tune import TuneConfig, TuneResult, run_study, study_storage_url

GB = "sklearn.ensemble:GradientBoostingClassifier"


@pytest.fixture
def data(tmp_path: Path, breast_cancer) -> dict:
    X, y = breast_cancer
    frame = X.assign(target=y)
    train, valid = tmp_path / "train.parquet", tmp_path / "valid.parquet"
    frame.iloc[:400].to_parquet(train)
    frame.iloc[400:].to_parquet(valid)
    return {
        "train_path": train,
        "valid_path": valid,
        "target": "target",
        "features": list(X.columns),
        "task": "classification",
    }


def _parent(url: str) -> tuple[Client, str]:
    client = Client(Settings.from_env(store_url=url))
    with client.start_run("tuning", name="pipeline", tags={"modelloop.pipeline": "t"}) as run:
        pass
    return client, run.run_id


def _children(client: Client, parent_id: str) -> dict[str, object]:
    page = client.search_runs(
        "tuning", filter=f"tags.`modelloop.parent_run_id` = '{parent_id}'", max_results=500
    )
    return {r.run_id: r for r in page}


def _check_trials_and_runs(client: Client, parent_id: str, result: TuneResult, n: int) -> None:
    """Exactly n trials numbered 0..n-1, each with its own child run agreeing with it."""
    numbers = [t["number"] for t in result.trials]
    assert sorted(numbers) == list(range(n))
    assert result.n_complete + result.n_pruned + result.n_failed == n
    children = _children(client, parent_id)
    assert len(children) == n
    assert {t["run_id"] for t in result.trials} == set(children)
    for t in result.trials:
        run = children[t["run_id"]]
        assert run.tags["modelloop.trial_number"] == str(t["number"])
        assert run.tags["modelloop.study"] == result.study_name
        assert run.tags["modelloop.trial_state"] == t["state"]
        assert run.status == ("FAILED" if t["state"] == "FAIL" else "FINISHED")
        if t["state"] == "COMPLETE":
            assert run.metrics[result.metric] == pytest.approx(t["value"])
            for key, value in t["params"].items():
                assert run.params[key] == str(value)


def test_two_workers_share_one_budget_on_postgresql(home, pg_url, data) -> None:
    client, parent_id = _parent(pg_url)
    config = TuneConfig(
        metric="auc",
        direction="maximize",
        space={
            "learning_rate": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
            "max_depth": {"type": "int", "low": 1, "high": 3},
        },
        n_trials=10,
        report_steps=3,
        pruning_startup_trials=3,
    )
    result = run_study(
        config,
        study_name="gb-pg",
        store_url=pg_url,
        model_factory=GB,
        base_params={"n_estimators": 15, "random_state": 0},
        workers=2,
        parent_run_id=parent_id,
        **data,
    )
    _check_trials_and_runs(client, parent_id, result, 10)
    assert {t["worker"] for t in result.trials} == {0, 1}  # both processes ran trials
    assert result.best_value == max(t["value"] for t in result.trials if t["state"] == "COMPLETE")
    assert result.best_value > 0.95
    assert set(result.best_params) == {"learning_rate", "max_depth"}
    # Optuna's tables live beside modelloop's, each with its own Alembic version table.
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"runs", "modelloop_alembic_version", "studies", "trials", "alembic_version"} <= tables
    client.close()


def test_sqlite_single_worker_and_joining_a_study(home, tmp_path, data) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    client, parent_id = _parent(url)
    space = {"max_depth": {"type": "int", "low": 1, "high": 8}}
    model = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"random_state": 0}}
    common = dict(study_name="lr", store_url=url, model_factory=model, parent_run_id=parent_id)

    first = run_study(TuneConfig("accuracy", "maximize", space, n_trials=4), **common, **data)
    assert first.n_complete == 4
    _check_trials_and_runs(client, parent_id, first, 4)
    # The budget is the study's: the same budget again adds nothing, a larger one the difference.
    again = run_study(TuneConfig("accuracy", "maximize", space, n_trials=4), **common, **data)
    assert len(again.trials) == 4
    more = run_study(TuneConfig("accuracy", "maximize", space, n_trials=6), **common, **data)
    _check_trials_and_runs(client, parent_id, more, 6)
    best = max(t["value"] for t in more.trials)
    assert more.best_value == best
    assert more.best_run_id == next(t["run_id"] for t in more.trials if t["value"] == best)
    # Joining with another objective is refused rather than mixing trials.
    with pytest.raises(Conflict, match="another metric or search space"):
        run_study(TuneConfig("f1", "maximize", space, n_trials=8), **common, **data)
    client.close()


def test_pruning_stops_weak_trials_of_a_staged_estimator(home, tmp_path, data) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    client, parent_id = _parent(url)
    config = TuneConfig(
        metric="log_loss",
        direction="minimize",
        space={"learning_rate": {"type": "float", "low": 1e-4, "high": 0.5, "log": True}},
        n_trials=12,
        report_steps=8,
        pruning_startup_trials=3,
    )
    result = run_study(
        config,
        study_name="prune",
        store_url=url,
        model_factory=GB,
        base_params={"n_estimators": 40, "max_depth": 2, "random_state": 0},
        parent_run_id=parent_id,
        **data,
    )
    _check_trials_and_runs(client, parent_id, result, 12)
    assert result.n_pruned >= 1
    assert result.n_complete >= 3
    for t in result.trials:
        history = client.get_metric_history(t["run_id"], "log_loss")
        if t["state"] == "PRUNED":  # stopped before growing to 40 trees: fewer reported steps
            assert max(m.step for m in history) < 40
        elif t["state"] == "COMPLETE":
            assert len(history) == 8  # 7 intermediate stages and the final score
    client.close()


def test_failed_trials_are_recorded_and_the_study_goes_on(home, tmp_path, data) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    client, parent_id = _parent(url)
    config = TuneConfig(
        metric="accuracy",
        direction="maximize",
        space={"subsample": {"type": "float", "low": 0.5, "high": 1.6}},  # > 1.0 fails in fit
        n_trials=8,
        pruning=False,
    )
    result = run_study(
        config,
        study_name="fails",
        store_url=url,
        model_factory=GB,
        base_params={"n_estimators": 5},
        parent_run_id=parent_id,
        **data,
    )
    _check_trials_and_runs(client, parent_id, result, 8)
    failed = [t for t in result.trials if t["state"] == "FAIL"]
    assert failed and result.n_complete >= 1
    children = _children(client, parent_id)
    for t in failed:
        assert t["params"]["subsample"] > 1.0
        assert "subsample" in children[t["run_id"]].tags["modelloop.error"]
    client.close()


def test_a_failing_worker_process_reports_its_error(home, tmp_path, data) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = TuneConfig(
        "auc", "maximize", {"max_depth": {"type": "int", "low": 1, "high": 3}}, n_trials=4
    )
    with pytest.raises(SchemaMismatch, match=r"tuning worker \d of 2 failed.*no_such_column"):
        run_study(
            config,
            study_name="broken",
            store_url=url,
            model_factory=GB,
            workers=2,
            **{**data, "features": [*data["features"], "no_such_column"]},
        )


def test_a_time_budget_alone_stops_the_study(home, tmp_path, data) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = TuneConfig(
        "accuracy",
        "maximize",
        {"max_depth": {"type": "int", "low": 1, "high": 3}},
        timeout_s=2.0,
        pruning=False,
    )
    began = time.time()
    result = run_study(
        config,
        study_name="timed",
        store_url=url,
        model_factory=GB,
        base_params={"n_estimators": 5},
        **data,
    )
    assert result.n_complete >= 1
    # No trial starts later than 2 s after the first; the one running at the deadline finishes.
    starts = [t["started_at"] for t in result.trials]
    assert began < min(starts) <= max(starts) < min(starts) + 2.0


def test_wrong_inputs_are_refused_with_their_name(home, tmp_path, data) -> None:
    space = {"max_depth": {"type": "int", "low": 1, "high": 3}}
    with pytest.raises(InvalidInput, match="direction must be 'minimize'"):
        TuneConfig("rmse", "maximize", space, n_trials=3)
    with pytest.raises(InvalidInput, match="budget"):
        TuneConfig("auc", "maximize", space)
    with pytest.raises(InvalidInput, match=r"space\['depth'\].*low 3 is above high 1"):
        TuneConfig("auc", "maximize", {"depth": {"type": "int", "low": 3, "high": 1}}, n_trials=3)
    with pytest.raises(InvalidInput, match="in-memory"):
        study_storage_url("sqlite://")
    assert study_storage_url("postgresql+psycopg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = TuneConfig("auc", "maximize", {"max_deep": space["max_depth"]}, n_trials=3)
    with pytest.raises(InvalidInput, match=r"no parameter\(s\) \['max_deep'\]"):
        run_study(config, study_name="s", store_url=url, model_factory=GB, **data)
    with pytest.raises(InvalidInput, match="does not apply to a regression task"):
        run_study(
            TuneConfig("auc", "maximize", space, n_trials=3),
            study_name="s",
            store_url=url,
            model_factory=GB,
            **{**data, "task": "regression"},
        )


FUTURE_CHECK = """
import numpy as np
from sklearn.linear_model import LogisticRegression


class PastOnly(LogisticRegression):
    \"\"\"Fails to score rows older than the newest row it was fitted on (a leak).\"\"\"

    def fit(self, X, y):
        self.newest_ = float(X["t"].max())
        return super().fit(X, y)

    def predict_proba(self, X):
        if float(np.min(X["t"])) < self.newest_:
            raise ValueError("scored on rows older than its training rows")
        return super().predict_proba(X)


def build(C=1.0):
    return PastOnly(C=C, max_iter=500)
"""


def test_time_ordered_cv_folds_never_validate_on_the_past(home, tmp_path, breast_cancer) -> None:
    X, y = breast_cancer
    frame = X.iloc[:, :4].assign(t=range(len(X)), target=y.to_numpy())
    train = tmp_path / "train.parquet"
    frame.to_parquet(train)
    (tmp_path / "pastonly.py").write_text(FUTURE_CHECK, encoding="utf-8")
    client, parent = _parent(f"sqlite:///{tmp_path / 'store.db'}")
    common = dict(
        store_url=client.settings.resolved_store_url,
        model_factory={"estimator": f"{tmp_path / 'pastonly.py'}:build"},
        train_path=train,
        valid_path=None,
        target="target",
        features=[*frame.columns[:4], "t"],
        task="classification",
        parent_run_id=parent,
    )
    space = {"C": {"type": "float", "low": 0.1, "high": 1.0}}
    config = TuneConfig("auc", "maximize", space, n_trials=2, cv_folds=3, time_ordered=True)
    result = run_study(config, study_name="time-cv", **common)
    assert result.n_complete == 2 and result.n_failed == 0
    shuffled = TuneConfig("auc", "maximize", space, n_trials=1, cv_folds=3, pruning=False)
    with pytest.raises(Exception, match="older than its training rows"):
        run_study(shuffled, study_name="shuffled-cv", **common)
    client.close()
