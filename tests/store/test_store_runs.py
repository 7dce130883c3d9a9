"""Experiments, runs, params and tags (run artifacts: test_store_artifacts.py)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest

from modelloop.exceptions import Conflict, InvalidInput, NotFound
from modelloop.store import Experiment, Metric, Run, RunStatus
from modelloop.store._sql import SqlStore

# -- experiments ------------------------------------------------------------------------------


def test_create_and_get_experiment(store: SqlStore) -> None:
    e = store.create_experiment("churn")
    assert isinstance(e, Experiment) and e.name == "churn" and e.created_at > 0
    assert store.get_experiment(e.experiment_id) == e
    assert store.get_experiment_by_name("churn") == e


def test_experiment_name_conflict_and_invalid(store: SqlStore) -> None:
    store.create_experiment("dup")
    with pytest.raises(Conflict, match="dup"):
        store.create_experiment("dup")
    for bad in ("", "   ", None, "x" * 300):
        with pytest.raises(InvalidInput):
            store.create_experiment(bad)  # type: ignore[arg-type]
    assert [e.name for e in store.list_experiments()] == ["dup"]


def test_missing_experiment_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound, match="42"):
        store.get_experiment(42)
    with pytest.raises(NotFound, match="nope"):
        store.get_experiment_by_name("nope")
    with pytest.raises(NotFound):
        store.create_run(42)


def test_get_or_create_experiment_and_list_order(store: SqlStore) -> None:
    a = store.get_or_create_experiment("a")
    assert store.get_or_create_experiment("a") == a
    b = store.create_experiment("b")
    c = store.get_or_create_experiment("c")
    assert store.list_experiments() == [a, b, c]


# -- runs -------------------------------------------------------------------------------------


def test_create_run_defaults(store: SqlStore, exp: Experiment) -> None:
    r = store.create_run(exp.experiment_id)
    assert re.fullmatch(r"[0-9a-f]{32}", r.run_id)
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d{3}", r.name)
    assert r.status is RunStatus.RUNNING and r.end_time is None and r.user == "unknown"
    assert store.get_run(r.run_id) == r
    with pytest.raises(NotFound, match="0" * 32):
        store.get_run("0" * 32)


def test_create_run_with_everything(store: SqlStore, exp: Experiment) -> None:
    r = store.create_run(
        exp.experiment_id, name="named", user="bob", tags={"team": "risk"}, start_time=1234
    )
    got = store.get_run(r.run_id)
    assert (got.name, got.user, got.start_time, dict(got.tags)) == (
        "named",
        "bob",
        1234,
        {"team": "risk"},
    )
    assert got == r


def test_records_are_frozen(store: SqlStore, run: Run) -> None:
    store.log_params(run.run_id, {"a": 1})
    got = store.get_run(run.run_id)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        got.params["a"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        got.tags["x"] = "y"  # type: ignore[index]
    assert store.get_run(run.run_id).params == {"a": "1"}


def test_end_run_transitions(store: SqlStore, run: Run) -> None:
    with pytest.raises(InvalidInput, match="RUNNING"):
        store.end_run(run.run_id, RunStatus.RUNNING)
    with pytest.raises(InvalidInput, match="DONE"):
        store.end_run(run.run_id, "DONE")  # type: ignore[arg-type]
    ended = store.end_run(run.run_id, RunStatus.FINISHED, end_time=5000)
    assert (ended.status, ended.end_time) == (RunStatus.FINISHED, 5000)
    again = store.end_run(run.run_id, RunStatus.FINISHED, end_time=9999)  # no-op
    assert again.end_time == 5000
    with pytest.raises(Conflict, match="FINISHED"):
        store.end_run(run.run_id, RunStatus.FAILED)
    assert store.get_run(run.run_id).status is RunStatus.FINISHED
    with pytest.raises(NotFound):
        store.end_run("f" * 32, RunStatus.KILLED)
    other = store.create_run(run.experiment_id)
    assert store.end_run(other.run_id, "KILLED").status is RunStatus.KILLED  # type: ignore[arg-type]


def test_end_run_with_the_last_values_stores_both_or_neither(store: SqlStore, run: Run) -> None:
    last = [
        Metric("loss", 0.5, 3, 1000),
        Metric("loss", 0.25, 4, 1001),
        Metric("acc", 0.9, 4, 1001),
    ]
    ended = store.end_run(run.run_id, RunStatus.FINISHED, end_time=7000, metrics=last)
    assert (ended.status, ended.end_time) == (RunStatus.FINISHED, 7000)
    assert ended.metrics == {"loss": 0.25, "acc": 0.9}
    assert [m.value for m in store.get_metric_history(run.run_id, "loss")] == [0.5, 0.25]
    # a bad value refuses the end too: the run stays running, nothing of the batch is stored
    other = store.create_run(run.experiment_id)
    bad = [Metric("ok", 1.0, 0, 1), Metric("", 2.0, 0, 1)]
    with pytest.raises(InvalidInput, match="metric key"):
        store.end_run(other.run_id, RunStatus.FINISHED, metrics=bad)
    kept = store.get_run(other.run_id)
    assert kept.status is RunStatus.RUNNING and kept.end_time is None
    assert store.count_metric_values(other.run_id) == 0
    # ending with another status than the first end refuses the values with it
    with pytest.raises(Conflict, match="FINISHED"):
        store.end_run(run.run_id, RunStatus.FAILED, metrics=[Metric("late", 1.0, 0, 1)])
    assert store.count_metric_values(run.run_id, "late") == 0


# -- params and tags --------------------------------------------------------------------------


def test_log_params_stores_strings_and_repeats_are_noops(store: SqlStore, run: Run) -> None:
    store.log_params(run.run_id, {"lr": 0.1, "depth": 3, "name": "x"})
    store.log_params(run.run_id, {"lr": 0.1})
    assert store.get_run(run.run_id).params == {"lr": "0.1", "depth": "3", "name": "x"}


def test_param_conflict_writes_nothing(store: SqlStore, run: Run) -> None:
    store.log_params(run.run_id, {"lr": 0.1})
    with pytest.raises(Conflict, match="'lr'"):
        store.log_params(run.run_id, {"new": "kept?", "lr": 0.2})
    assert store.get_run(run.run_id).params == {"lr": "0.1"}


def test_param_errors(store: SqlStore, run: Run) -> None:
    with pytest.raises(NotFound):
        store.log_params("a" * 32, {"x": 1})
    with pytest.raises(InvalidInput):
        store.log_params(run.run_id, {"": 1})
    with pytest.raises(InvalidInput):
        store.log_params(run.run_id, {"k" * 251: 1})
    assert store.get_run(run.run_id).params == {}


def test_tags_are_overwritten(store: SqlStore, run: Run) -> None:
    store.set_tags(run.run_id, {"a": "1", "b": "2"})
    store.set_tags(run.run_id, {"a": "3"})
    assert store.get_run(run.run_id).tags == {"a": "3", "b": "2"}
    with pytest.raises(NotFound):
        store.set_tags("b" * 32, {"a": "1"})


# -- threads ----------------------------------------------------------------------------------


def test_one_store_shared_by_threads(
    store: SqlStore, exp: Experiment, in_threads: Callable[..., list[object]]
) -> None:
    def work(i: int) -> str:
        r = store.create_run(exp.experiment_id, name=f"t{i}")
        store.log_params(r.run_id, {"i": i})
        store.log_metrics(r.run_id, [Metric("m", float(s), s, s) for s in range(50)])
        store.end_run(r.run_id, RunStatus.FINISHED)
        return r.run_id

    run_ids = in_threads(work, range(8))
    assert all(isinstance(r, str) for r in run_ids), run_ids
    runs = store.search_runs([exp.experiment_id], max_results=100)
    assert sorted(r.run_id for r in runs) == sorted(run_ids) and len(run_ids) == 8
    assert all(r.metrics == {"m": 49.0} and r.status is RunStatus.FINISHED for r in runs)
