"""Version tags, monitoring results, alert states and events; the 0001 -> 0002 upgrade."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import sqlalchemy as sa

from modelloop.exceptions import InvalidInput, NotFound, StoreError
from modelloop.store import AlertEventRecord, AlertRecord, MonitoringRecord, Run
from modelloop.store._sql import HEAD_REVISION, SqlStore
from modelloop.store._sql import _schema as T
from modelloop.store._sql._migrate import alembic_config, current_revision

# -- version tags -----------------------------------------------------------------------------


def test_version_tags_are_merged_and_audited(store: SqlStore) -> None:
    store.create_model_version("m", source="s1", tags={"team": "a", "stage": "dev"})
    store.create_model_version("m", source="s2", tags={"team": "b"})
    store.set_alias("m", "champion", 1)
    mv = store.set_model_version_tags("m", 1, {"stage": "prod", "ref": 123}, actor="bob")
    assert mv.tags == {"team": "a", "stage": "prod", "ref": "123"}  # values stored as str
    assert mv.aliases == ("champion",) and mv.source == "s1"
    assert store.get_model_version("m", 1) == mv
    assert store.get_model_version("m", 2).tags == {"team": "b"}  # other versions untouched
    events = store.list_audit_events(entity_type="model_version", entity_id="m/1")
    tag_events = [e for e in events if e.action == "model_version.tags"]
    assert len(tag_events) == 1
    e = tag_events[0]
    assert e.actor == "bob"
    assert e.before == {"team": "a", "stage": "dev"}
    assert e.after == {"team": "a", "stage": "prod", "ref": "123"}


def test_version_tags_errors_write_nothing(store: SqlStore) -> None:
    store.create_model_version("m", source="s")
    with pytest.raises(NotFound, match="version 7"):
        store.set_model_version_tags("m", 7, {"k": "v"})
    with pytest.raises(NotFound):
        store.set_model_version_tags("missing", 1, {"k": "v"})
    with pytest.raises(InvalidInput):
        store.set_model_version_tags("m", 1, {"": "v"})
    with pytest.raises(InvalidInput):
        store.set_model_version_tags("m", 1, ["k"])  # type: ignore[arg-type]
    assert store.get_model_version("m", 1).tags == {}
    assert [e.action for e in store.list_audit_events()] == [
        "registered_model.create",
        "model_version.create",
    ]


def test_concurrent_tag_merges_lose_nothing(
    store: SqlStore, in_threads: Callable[..., list[object]]
) -> None:
    store.create_model_version("m", source="s")
    store.upgrade()

    def worker(w: int) -> None:
        for i in range(8):
            store.set_model_version_tags("m", 1, {f"w{w}_{i}": str(i)})

    assert in_threads(worker, range(3)) == [None] * 3
    assert store.get_model_version("m", 1).tags == {
        f"w{w}_{i}": str(i) for w in range(3) for i in range(8)
    }


# -- monitoring results -----------------------------------------------------------------------


def test_monitoring_result_round_trips_every_field(store: SqlStore) -> None:
    payload = {
        "zeta": 1,
        "alpha": {"psi": np.float64(0.25), "hist": np.array([1, 2]), "bad": math.inf},
        "list": [1.5, math.nan, "x", None, True],
    }
    r = store.add_monitoring_result(
        "flights",  # not registered: any name is accepted
        model_version=3,
        window_start=1_000,
        window_end=2_000,
        num_rows=np.int64(500),
        share_drifted=0.4,
        dataset_drift=np.bool_(True),
        drifted_columns=["dep_delay", "month"],
        metrics={"accuracy": 0.9, "auc": math.nan, "loss": -math.inf, "n": 3},
        payload=payload,
        created_at=5_000,
    )
    assert isinstance(r, MonitoringRecord) and r.result_id > 0
    assert r.model_name == "flights" and r.model_version == 3
    assert (r.window_start, r.window_end, r.created_at, r.num_rows) == (1_000, 2_000, 5_000, 500)
    assert r.share_drifted == 0.4 and r.dataset_drift is True
    assert r.drifted_columns == ("dep_delay", "month")
    assert r.metrics == {"accuracy": 0.9, "auc": None, "loss": None, "n": 3.0}
    assert r.payload == {
        "zeta": 1,
        "alpha": {"psi": 0.25, "hist": [1, 2], "bad": None},
        "list": [1.5, None, "x", None, True],
    }
    assert list(r.payload) == ["zeta", "alpha", "list"]  # key order kept
    [stored] = store.list_monitoring_results("flights")
    assert stored == r
    assert isinstance(stored.drifted_columns, tuple)
    with pytest.raises(TypeError):
        stored.metrics["accuracy"] = 0.0  # type: ignore[index]


def test_monitoring_result_defaults_and_nulls(store: SqlStore) -> None:
    r = store.add_monitoring_result(
        "m", model_version=None, window_start=None, window_end=None, num_rows=0,
        share_drifted=math.nan, dataset_drift=False,
    )  # fmt: skip
    assert r.created_at > 1_600_000_000_000  # now, in epoch ms
    assert r.model_version is None and r.window_start is None and r.window_end is None
    assert r.share_drifted is None and r.dataset_drift is False
    assert r.drifted_columns == () and r.metrics == {} and r.payload == {}
    other = store.add_monitoring_result(
        "m", model_version=1, window_start=None, window_end=None, num_rows=1
    )
    assert other.dataset_drift is None and other.result_id > r.result_id
    assert store.list_monitoring_results("m") == [r, other]


def test_monitoring_results_newest_limit_oldest_first(store: SqlStore) -> None:
    def add(name: str, at: int) -> MonitoringRecord:
        return store.add_monitoring_result(
            name, model_version=1, window_start=None, window_end=None, num_rows=at,
            created_at=at,
        )  # fmt: skip

    recs = {at: add("a", at) for at in (30, 10, 50, 20, 40)}
    tie = add("a", 50)  # same instant: the later insert counts as newer
    add("b", 60)
    assert [r.created_at for r in store.list_monitoring_results("a")] == [10, 20, 30, 40, 50, 50]
    assert store.list_monitoring_results("a", limit=3) == [recs[40], recs[50], tie]
    assert store.list_monitoring_results("a", since=30) == [recs[30], recs[40], recs[50], tie]
    assert store.list_monitoring_results("a", since=20, limit=2) == [recs[50], tie]
    assert store.list_monitoring_results("a", since=51) == []
    assert [r.model_name for r in store.list_monitoring_results("b")] == ["b"]
    assert store.list_monitoring_results("nobody") == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_name": ""},
        {"num_rows": -1},
        {"num_rows": 1.5},
        {"model_version": True},
        {"window_start": "yesterday"},
        {"share_drifted": "high"},
        {"dataset_drift": "yes"},
        {"drifted_columns": "dep_delay"},
        {"drifted_columns": [1]},
        {"metrics": {"acc": "good"}},
        {"metrics": [("acc", 1.0)]},
        {"payload": {"x": object()}},
        {"payload": [1, 2]},
    ],
)
def test_bad_monitoring_input_is_invalid_and_writes_nothing(
    store: SqlStore, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {
        "model_name": "m", "model_version": 1, "window_start": None, "window_end": None,
        "num_rows": 1,
    }  # fmt: skip
    args.update(kwargs)
    with pytest.raises(InvalidInput):
        store.add_monitoring_result(**args)  # type: ignore[arg-type]
    assert store.list_monitoring_results("m") == []


def test_list_limits_must_be_positive(store: SqlStore) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        store.list_monitoring_results("m", limit=0)
    with pytest.raises(InvalidInput, match="limit"):
        store.list_alert_events(limit=0)


# -- alerts -----------------------------------------------------------------------------------


def _alert(model: str = "m", rule: str = "drift", firing: bool = True, at: int = 100, **kw):  # type: ignore[no-untyped-def]
    return AlertRecord(model, rule, firing, since=kw.pop("since", at), updated_at=at, **kw)


def test_put_alert_without_event_stores_state_only(store: SqlStore) -> None:
    assert store.get_alert("m", "drift") is None
    a = _alert(value=0.7, message="70% of columns drifted")
    assert store.put_alert(a) is None
    assert store.get_alert("m", "drift") == a
    assert store.list_alert_events() == []
    b = _alert(firing=True, at=200, since=100, value=0.8, message="still")
    assert store.put_alert(b) is None  # replaces the state
    assert store.get_alert("m", "drift") == b
    assert store.list_alerts() == [b]


def test_put_alert_with_event_appends_it(store: SqlStore) -> None:
    fired = store.put_alert(_alert(value=0.7, message="on"), event_status="firing")
    assert isinstance(fired, AlertEventRecord) and fired.event_id > 0
    assert (fired.model_name, fired.rule, fired.status) == ("m", "drift", "firing")
    assert (fired.value, fired.message, fired.timestamp) == (0.7, "on", 100)
    resolved = store.put_alert(
        _alert(firing=False, at=300, value=None, message="off"), event_status="resolved"
    )
    assert resolved is not None and resolved.event_id > fired.event_id
    assert resolved.value is None and resolved.timestamp == 300
    assert store.list_alert_events() == [fired, resolved]
    assert store.get_alert("m", "drift") == _alert(firing=False, at=300, message="off")


def test_alert_values_nan_is_none_infinity_kept(store: SqlStore) -> None:
    ev = store.put_alert(_alert(rule="nan", value=math.nan), event_status="firing")
    assert ev is not None and ev.value is None
    assert store.get_alert("m", "nan") == _alert(rule="nan", value=None)
    assert store.list_alert_events()[0].value is None
    store.put_alert(_alert(rule="inf", value=-math.inf))
    stored = store.get_alert("m", "inf")
    assert stored is not None and stored.value == -math.inf
    store.put_alert(_alert(rule="np", value=np.float32(0.5)))
    assert store.get_alert("m", "np") == _alert(rule="np", value=0.5)


def test_bad_alerts_are_invalid_and_write_nothing(store: SqlStore) -> None:
    with pytest.raises(InvalidInput, match="event_status"):
        store.put_alert(_alert(), event_status="exploded")
    for bad in (
        _alert(model=""),
        _alert(rule=""),
        _alert(value="high"),
        _alert(message=None),
        _alert(firing="yes"),  # type: ignore[arg-type]
        AlertRecord("m", "drift", True, since="now", updated_at=1),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInput):
            store.put_alert(bad, event_status="firing")
    with pytest.raises(InvalidInput):
        store.put_alert({"model_name": "m"})  # type: ignore[arg-type]
    assert store.list_alerts() == [] and store.list_alert_events() == []


def test_put_alert_is_one_transaction(store: SqlStore, store_url: str) -> None:
    before = _alert(value=0.1, message="before")
    store.put_alert(before)
    # Take the events table away: the state update must roll back with the failed event insert.
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alert_events"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError):
        store.put_alert(_alert(firing=False, at=500, message="after"), event_status="resolved")
    assert store.get_alert("m", "drift") == before


def test_list_alerts_order_and_filters(store: SqlStore) -> None:
    states = [
        _alert("b", "z", firing=False),
        _alert("a", "y", firing=True),
        _alert("b", "a", firing=True),
        _alert("a", "x", firing=False),
    ]
    for s in states:
        store.put_alert(s)
    keys = [(s.model_name, s.rule) for s in store.list_alerts()]
    assert keys == [("a", "x"), ("a", "y"), ("b", "a"), ("b", "z")]
    assert [s.rule for s in store.list_alerts("b")] == ["a", "z"]
    assert [s.rule for s in store.list_alerts(firing_only=True)] == ["y", "a"]
    assert [s.rule for s in store.list_alerts("a", firing_only=True)] == ["y"]
    assert store.list_alerts("nobody") == []


def test_alert_events_newest_limit_oldest_first(store: SqlStore) -> None:
    made = []
    for i in range(6):
        model = "a" if i % 2 == 0 else "b"
        status = "firing" if i % 4 < 2 else "resolved"
        ev = store.put_alert(_alert(model, at=i, firing=status == "firing"), event_status=status)
        assert ev is not None
        made.append(ev)
    assert store.list_alert_events() == made
    assert store.list_alert_events(limit=2) == made[4:]
    assert store.list_alert_events("a") == made[0::2]
    assert store.list_alert_events("b", limit=2) == made[3::2]
    assert store.list_alert_events("nobody") == []


# -- migration 0001 -> 0002 -------------------------------------------------------------------


def test_a_0001_database_upgrades_and_keeps_its_data(store_url: str) -> None:
    from alembic import command

    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        with engine.begin() as conn:
            assert current_revision(conn) == "0001"
            assert "monitoring_results" not in sa.inspect(conn).get_table_names()
            # Rows written by a 0001-era modelloop (these tables did not change in 0002).
            conn.execute(T.experiments.insert(), {"name": "old", "created_at": 1})
            exp_id = conn.execute(sa.select(T.experiments.c.experiment_id)).scalar_one()
            conn.execute(
                T.runs.insert(),
                {"run_id": "a" * 32, "experiment_id": exp_id, "run_name": "r",
                 "status": "FINISHED", "start_time": 1, "end_time": 2, "user_name": "u"},
            )  # fmt: skip
            conn.execute(
                T.registered_models.insert(),
                {"name": "m", "description": "", "created_at": 1, "updated_at": 1,
                 "latest_version": 1},
            )  # fmt: skip
            conn.execute(
                T.model_versions.insert(),
                {"name": "m", "version": 1, "run_id": "a" * 32, "source": "runs:/x/model",
                 "created_at": 1, "user_name": "u", "description": "", "tags": {"t": "1"}},
            )  # fmt: skip
    finally:
        engine.dispose()

    store = SqlStore(store_url)
    try:
        assert store.get_run("a" * 32).status == "FINISHED"
        mv = store.set_model_version_tags("m", 1, {"ref": "abc"})
        assert mv.tags == {"t": "1", "ref": "abc"} and mv.run_id == "a" * 32
        assert store.upgrade() == HEAD_REVISION
        r = store.add_monitoring_result(
            "m", model_version=1, window_start=None, window_end=None, num_rows=5
        )
        assert store.list_monitoring_results("m") == [r]
        ev = store.put_alert(_alert("m"), event_status="firing")
        assert store.list_alert_events("m") == [ev]
    finally:
        store.close()


@pytest.mark.sql_only  # reads the SQL engine itself
def test_0002_downgrades_to_0001_and_upgrades_again(store: SqlStore, run: Run) -> None:
    from alembic import command

    store.add_monitoring_result("m", model_version=None, window_start=None, window_end=None,
                                num_rows=1)  # fmt: skip
    with store._engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    with store._engine.begin() as conn:
        assert current_revision(conn) == "0001"
        tables = set(sa.inspect(conn).get_table_names())
    assert not tables & {"monitoring_results", "alerts", "alert_events"}
    assert store.upgrade() == HEAD_REVISION  # this store object still knows it is stale
    assert store.get_run(run.run_id) == run
    assert store.list_monitoring_results("m") == []


def test_transition_alert_announces_only_changes(store: SqlStore) -> None:
    assert store.transition_alert(_alert(firing=False, at=1)) is None  # first, quiet: no event
    fired = store.transition_alert(_alert(firing=True, at=2, value=0.7))
    assert fired is not None and fired.status == "firing" and fired.timestamp == 2
    assert store.transition_alert(_alert(firing=True, at=3, value=0.8)) is None  # still firing
    held = store.get_alert("m", "drift")
    assert held is not None and held.since == 2 and held.updated_at == 3 and held.value == 0.8
    resolved = store.transition_alert(_alert(firing=False, at=4))
    assert resolved is not None and resolved.status == "resolved"
    assert [e.status for e in store.list_alert_events("m")] == ["firing", "resolved"]


def test_racing_transitions_announce_once(
    store_url: str, in_threads: Callable[..., list[object]]
) -> None:
    stores = [SqlStore(store_url) for _ in range(8)]
    stores[0].upgrade()
    results = in_threads(lambda s: s.transition_alert(_alert(firing=True, at=10)), stores)
    for s in stores:
        s.close()
    assert len(results) == 8
    assert not any(isinstance(r, BaseException) for r in results), results
    assert sum(isinstance(r, AlertEventRecord) for r in results) == 1
    assert sum(r is not None for r in results) == 1
    check = SqlStore(store_url)
    assert [e.status for e in check.list_alert_events("m")] == ["firing"]
    check.close()


def test_an_older_evaluation_never_overrides_a_newer_one(store: SqlStore) -> None:
    assert store.transition_alert(_alert(firing=True, at=1000)) is not None
    assert store.transition_alert(_alert(firing=False, at=3000)) is not None  # resolved
    assert store.transition_alert(_alert(firing=True, at=2000)) is None  # late and stale
    state = store.get_alert("m", "drift")
    assert state is not None and not state.firing and state.updated_at == 3000
    assert [e.status for e in store.list_alert_events("m")] == ["firing", "resolved"]
