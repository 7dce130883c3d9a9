"""search_runs: the filter grammar, ordering, pagination and errors."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from sqlalchemy import event

from modelloop.exceptions import InvalidInput
from modelloop.store import Experiment, Metric, RunStatus
from modelloop.store._sql import SqlStore


@dataclass
class World:
    store: SqlStore
    exp: int
    ids: list[str]  # r0..r3 in creation order

    def find(self, filter: str = "", order_by: tuple[str, ...] = ()) -> list[str]:
        """Names r0..r3 of the matching runs, in result order."""
        page = self.store.search_runs([self.exp], filter=filter, order_by=order_by)
        return [f"r{self.ids.index(r.run_id)}" for r in page]


@pytest.fixture
def world(store: SqlStore) -> World:
    exp = store.create_experiment("search").experiment_id
    other = store.create_experiment("other").experiment_id
    spec = [
        # name, user, start, metrics, params, tags, end status
        ("alpha", "alice", 1000, {"loss": 0.5, "acc": 0.9, "val loss": 0.4, "a.b": 1.0},
         {"model": "rf", "depth": "3"}, {"team": "Risk"}, (RunStatus.FINISHED, 2000)),
        ("beta", "bob", 2000, {"loss": 0.3, "acc": math.nan},
         {"model": "gbm", "depth": "5"}, {"team": "risk"}, None),
        ("gamma", "alice", 3000, {"loss": 0.8},
         {"model": "RF_big"}, {}, (RunStatus.FAILED, 3500)),
        ("delta", "carol", 4000, {}, {}, {"team": "ops"}, None),
    ]  # fmt: skip
    ids = []
    for name, user, start, metrics, params, tags, end in spec:
        r = store.create_run(exp, name=name, user=user, start_time=start, tags=tags)
        store.log_params(r.run_id, params)
        store.log_metrics(r.run_id, [Metric(k, v, 0, start) for k, v in metrics.items()])
        if end:
            store.end_run(r.run_id, end[0], end_time=end[1])
        ids.append(r.run_id)
    noise = store.create_run(other, name="alpha", user="alice", start_time=5000)
    store.log_metrics(noise.run_id, [Metric("loss", 0.5)])
    return World(store, exp, ids)


def test_no_filter_newest_first_with_full_records(world: World) -> None:
    assert world.find() == ["r3", "r2", "r1", "r0"]
    page = world.store.search_runs([world.exp])
    r0 = page.items[-1]
    assert r0 == world.store.get_run(world.ids[0])
    assert dict(r0.params) == {"model": "rf", "depth": "3"} and r0.tags == {"team": "Risk"}
    assert r0.metrics["val loss"] == 0.4 and r0.status is RunStatus.FINISHED


def test_a_page_is_a_read_only_sequence_of_runs(world: World) -> None:
    page = world.store.search_runs([world.exp], max_results=3)
    names = ["delta", "gamma", "beta"]
    assert isinstance(page, Sequence) and len(page) == 3 and bool(page)
    assert page[0].name == "delta" and page[-1].name == "beta"
    assert [r.name for r in page[1:]] == names[1:] and isinstance(page[1:], tuple)
    assert [r.name for r in page] == names and [r.name for r in reversed(page)] == names[::-1]
    assert page[2] in page and page.index(page[1]) == 1 and page.count(page[0]) == 1
    with pytest.raises(IndexError):
        page[3]
    with pytest.raises(TypeError):
        page[0] = page[1]  # type: ignore[index]
    with pytest.raises(AttributeError):
        page.items = ()  # type: ignore[misc]
    assert page.next_page_token is not None
    rest = world.store.search_runs([world.exp], max_results=3, page_token=page.next_page_token)
    assert [r.name for r in rest] == ["alpha"] and rest.next_page_token is None
    assert not world.store.search_runs([world.exp], filter="metrics.loss > 5")


# One world per backend serves every case (building it per case would dominate the run time).
FILTER_CASES = [
        ("metrics.loss = 0.5", ["r0"]),
        ("metrics.loss != 0.5", ["r2", "r1"]),
        ("metrics.loss < 0.5", ["r1"]),
        ("metrics.loss <= 0.5", ["r1", "r0"]),
        ("metrics.loss > 0.5", ["r2"]),
        ("metrics.loss >= 0.3", ["r2", "r1", "r0"]),
        ("metrics.loss<0.4", ["r1"]),
        ("metrics.loss = 5e-1", ["r0"]),
        ("metrics.loss = .5", ["r0"]),
        ("metrics.loss > -1", ["r2", "r1", "r0"]),
        ("metrics.acc > 0", ["r0"]),  # NaN matches no ordering comparison
        ("metrics.acc != 0.9", ["r1"]),  # ... but is unequal to everything
        ("metrics.`val loss` < 1", ["r0"]),
        ("metrics.`a.b` = 1", ["r0"]),
        ("params.model = 'rf'", ["r0"]),
        ('params.model = "gbm"', ["r1"]),
        ("params.model != 'rf'", ["r2", "r1"]),
        ("params.model like 'rf%'", ["r0"]),  # like is case-sensitive on every backend
        ("params.model LIKE 'g_m'", ["r1"]),
        ("params.model ilike 'rf%'", ["r2", "r0"]),
        ("params.model like 'RF\\_%'", ["r2"]),  # backslash escapes a wildcard
        ("params.depth = '5'", ["r1"]),
        ("tags.team = 'risk'", ["r1"]),
        ("tags.team ILIKE 'RISK'", ["r1", "r0"]),
        ("tags.team != 'ops'", ["r1", "r0"]),
        ("attributes.status = 'FINISHED'", ["r0"]),
        ("attributes.status != 'RUNNING'", ["r2", "r0"]),
        ("attributes.run_name like '%a'", ["r3", "r2", "r1", "r0"]),
        ("attributes.run_name = 'beta'", ["r1"]),
        ("attributes.user = 'alice'", ["r2", "r0"]),
        ("attributes.start_time >= 2000", ["r3", "r2", "r1"]),
        ("attributes.start_time = 1000", ["r0"]),
        ("attributes.end_time < 3000", ["r0"]),
        ("attributes.end_time > 0", ["r2", "r0"]),
        ("metrics.loss < 1 and params.model = 'gbm'", ["r1"]),
        ("metrics.loss < 1 AND attributes.user = 'alice' And params.model ilike 'rf%'",
         ["r2", "r0"]),
        ("  metrics.loss   <   1   and   tags.team = 'Risk'  ", ["r0"]),
        ("params.model = 'nothing'", []),
        ("", ["r3", "r2", "r1", "r0"]),
]  # fmt: skip


def test_filter_grammar(world: World) -> None:
    cases = [*FILTER_CASES, (f"attributes.run_id = '{world.ids[2]}'", ["r2"])]
    wrong = {f: (world.find(f), want) for f, want in cases if world.find(f) != want}
    assert wrong == {}, "filter -> (found, expected)"


ORDER_CASES = [
        (("metrics.loss",), ["r1", "r0", "r2", "r3"]),  # runs without the metric come last
        (("metrics.loss DESC",), ["r2", "r0", "r1", "r3"]),
        (("metrics.acc desc",), ["r0", "..."]),  # NaN and missing come last, by run id
        (("params.model ASC",), ["r2", "r1", "r0", "r3"]),
        (("tags.team", "start_time desc"), ["r0", "r3", "r1", "r2"]),
        (("start_time",), ["r0", "r1", "r2", "r3"]),
        (("attributes.start_time DESC",), ["r3", "r2", "r1", "r0"]),
        (("attributes.user", "run_name"), ["r0", "r2", "r1", "r3"]),
        (("metrics.`val loss`",), ["r0", "..."]),
]  # fmt: skip


def test_order_by(world: World) -> None:
    wrong = {}
    for order_by, expected in ORDER_CASES:
        if expected[-1] == "...":  # the others tie (key missing or NaN): the run id decides
            rest = sorted(i for i in world.ids if f"r{world.ids.index(i)}" not in expected)
            expected = expected[:-1] + [f"r{world.ids.index(i)}" for i in rest]
        found = world.find(order_by=order_by)
        if found != expected:
            wrong[order_by] = (found, expected)
    assert wrong == {}, "order_by -> (found, expected)"


def test_ties_are_broken_by_run_id(store: SqlStore, exp: Experiment) -> None:
    ids = [store.create_run(exp.experiment_id, start_time=7).run_id for _ in range(5)]
    assert [r.run_id for r in store.search_runs([exp.experiment_id])] == sorted(ids)


def test_search_across_experiments(world: World) -> None:
    s = world.store
    other = s.get_experiment_by_name("other").experiment_id
    assert len(s.search_runs([world.exp, other], filter="metrics.loss = 0.5")) == 2
    assert len(s.search_runs([other])) == 1
    assert len(s.search_runs([])) == 0


def test_pagination_covers_every_run_once(store: SqlStore, exp: Experiment) -> None:
    for i in range(23):
        r = store.create_run(exp.experiment_id, start_time=i // 3)  # ties across pages
        store.log_metrics(r.run_id, [Metric("m", float(i % 5))])
    everything = [r.run_id for r in store.search_runs([exp.experiment_id], max_results=100)]
    for order in ((), ("metrics.m",)):
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            page = store.search_runs(
                [exp.experiment_id], order_by=order, max_results=5, page_token=token
            )
            seen += [r.run_id for r in page]
            pages += 1
            token = page.next_page_token
            if token is None:
                break
            assert len(page) == 5
        assert pages == 5 and len(seen) == 23 and sorted(seen) == sorted(everything)
        if not order:
            assert seen == everything


def test_a_run_created_between_pages_shifts_nothing(store: SqlStore, exp: Experiment) -> None:
    ids = [store.create_run(exp.experiment_id, start_time=t).run_id for t in range(10)]
    first = store.search_runs([exp.experiment_id], max_results=4)
    assert [r.run_id for r in first] == ids[::-1][:4]
    for t in (100, 101, 102):  # newer than everything: they sort before page 1
        store.create_run(exp.experiment_id, start_time=t)
    second = store.search_runs([exp.experiment_id], max_results=4, page_token=first.next_page_token)
    assert [r.run_id for r in second] == ids[::-1][4:8]  # an offset would repeat 3 runs


@dataclass
class Keyed:
    start: int
    m: float | None  # None: the run has no metric m
    p: str | None  # None: the run has no param p


def _expected(data: dict[str, Keyed], order: tuple[str, ...]) -> list[str]:
    """The order search_runs promises, computed in Python: missing and NaN last either way,
    then the run id."""
    ids = sorted(data)  # the final tie-breaker, ascending
    keys = [o.split() for o in order] or [["start_time", "DESC"]]
    for key, *direction in reversed(keys):  # stable sorts, least significant key first
        desc = direction == ["DESC"]

        def value(run_id: str, key: str = key) -> object:
            d = data[run_id]
            return {"start_time": d.start, "metrics.m": d.m, "params.p": d.p}[key]

        def missing(run_id: str) -> bool:
            v = value(run_id)
            return v is None or (isinstance(v, float) and math.isnan(v))

        present = [r for r in ids if not missing(r)]
        present.sort(key=value, reverse=desc)  # type: ignore[arg-type]  # stable either way
        ids = present + [r for r in ids if missing(r)]
    return ids


KEYSET_ORDERS = [
    (),
    ("start_time",),
    ("metrics.m",),
    ("metrics.m DESC",),
    ("params.p", "start_time DESC"),
    ("metrics.m DESC", "params.p"),
]
METRIC_VALUES = [0.5, 1.0, 1.0, math.nan, None, -math.inf, 2.0, 1.0, math.inf]


def test_keyset_pages_continue_after_the_last_row_while_runs_arrive(
    store: SqlStore, exp: Experiment
) -> None:
    _check_keyset_pages(store, exp)


@pytest.mark.sql_only  # chooses the SQL plan in this process
def test_keyset_pages_read_through_the_metric_value_index(
    store: SqlStore, exp: Experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan a large experiment sorted on a metric gets (runs with a value read in index
    order, then the runs without one) gives the same pages, runs arriving meanwhile included."""
    from modelloop.store._sql import _search

    chosen: list[str] = []

    def always(conn: object, ids: object, key: str) -> bool:
        chosen.append(key)
        return True

    monkeypatch.setattr(_search, "_metric_walk_pays", always)
    _check_keyset_pages(store, exp)
    assert set(chosen) == {"m"}


def _check_keyset_pages(store: SqlStore, exp: Experiment) -> None:
    data: dict[str, Keyed] = {}

    def add(start: int, m: float | None, p: str | None) -> None:
        r = store.create_run(exp.experiment_id, start_time=start)
        if m is not None:
            store.log_metrics(r.run_id, [Metric("m", m)])
        if p is not None:
            store.log_params(r.run_id, {"p": p})
        data[r.run_id] = Keyed(start, m, p)

    for i in range(18):
        add(i // 3, METRIC_VALUES[i % len(METRIC_VALUES)], (None, "a", "b")[i % 3])
    arrivals = 0
    for order in KEYSET_ORDERS:
        everything = store.search_runs([exp.experiment_id], order_by=order, max_results=1000)
        assert [r.run_id for r in everything] == _expected(data, order), order
        before = set(data)
        seen: list[str] = []
        token = None
        while True:
            expected = _expected(data, order)
            after = expected[expected.index(seen[-1]) + 1 :] if seen else expected
            page = store.search_runs(
                [exp.experiment_id], order_by=order, max_results=4, page_token=token
            )
            assert [r.run_id for r in page] == after[:4], (order, len(seen))
            assert (page.next_page_token is None) == (len(after) <= 4)
            seen += [r.run_id for r in page]
            token = page.next_page_token
            if token is None:
                break
            # Runs arrive around the cursor: newer, tied with it, with and without the keys.
            last = data[seen[-1]]
            for j in range(2):
                arrivals += 1
                m = last.m if arrivals % 3 == 0 else METRIC_VALUES[arrivals % len(METRIC_VALUES)]
                start = last.start if j else 1000 + arrivals
                add(start, m, (None, "a", "b", last.p)[arrivals % 4])
        assert len(seen) == len(set(seen)) and before <= set(seen), order


def test_page_token_errors(world: World) -> None:
    s = world.store
    page = s.search_runs([world.exp], max_results=2)
    assert page.next_page_token is not None
    with pytest.raises(InvalidInput, match="another search"):
        s.search_runs([world.exp], filter="metrics.loss > 0", page_token=page.next_page_token)
    with pytest.raises(InvalidInput, match="page_token"):
        s.search_runs([world.exp], page_token="garbage!")
    for bad in (0, -1, 50_001):
        with pytest.raises(InvalidInput, match="max_results"):
            s.search_runs([world.exp], max_results=bad)
    rest = s.search_runs([world.exp], max_results=2, page_token=page.next_page_token)
    assert len(rest) == 2 and rest.next_page_token is None
    # A token whose key values do not fit the order (edited by hand) is refused.
    token = page.next_page_token
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for k, r in (([None], data["r"]), (["soon"], data["r"]), ([], data["r"]), (data["k"], 7)):
        raw = json.dumps({**data, "k": k, "r": r}).encode()
        forged = base64.urlsafe_b64encode(raw).decode()
        with pytest.raises(InvalidInput, match="page_token"):
            s.search_runs([world.exp], max_results=2, page_token=forged)


BAD_FILTERS = [
        ("metric.loss < 1", "'metric'"),
        ("metrics.loss ~ 1", "'~'"),
        ("metrics.loss == 1", "'=='"),
        ("metrics.loss < 'a'", "'a'"),
        ("metrics.loss like 'a%'", "'like'"),
        ("params.model < 'a'", "'<'"),
        ("params.model = rf", "'rf'"),
        ("tags.team = 3", "'3'"),
        ("metrics.loss < 1 or metrics.acc > 1", "'or'"),
        ("metrics.loss < 1 and", "'and'"),
        ("attributes.colour = 'x'", "'colour'"),
        ("attributes.start_time = 'yesterday'", "'yesterday'"),
        ("metrics.`val loss < 1", "unterminated"),
        ("params.model = 'x", "unterminated"),
        ("metrics.loss <", "metrics.loss <"),
        ("metrics", "'metrics'"),
        ("metrics. < 1", "'<'"),
        ("metrics.loss 1", "'1'"),
        ("metrics.loss < 1 metrics.acc < 1", "'metrics.acc'"),
]  # fmt: skip
BAD_ORDERS = [
    ("metrics.loss sideways", "'sideways'"),
    ("colour", "'colour'"),
    ("metric.loss", "'metric'"),
    ("metrics.loss desc desc", "'desc'"),
    ("", "empty"),
]


def _error(fn) -> str:  # type: ignore[no-untyped-def]
    try:
        fn()
    except InvalidInput as e:
        return str(e)
    return "<no error>"


def test_bad_filters_name_the_token(store: SqlStore, exp: Experiment) -> None:
    ids = [exp.experiment_id]
    wrong = {}
    for text, named in BAD_FILTERS:
        message = _error(lambda t=text: store.search_runs(ids, filter=t))
        if not (message.startswith("bad filter") and named in message):
            wrong[text] = message
    for text, named in BAD_ORDERS:
        message = _error(lambda t=text: store.search_runs(ids, order_by=[t]))
        if not (message.startswith("bad order_by") and named in message):
            wrong[text] = message
    assert wrong == {}


@pytest.mark.sql_only  # reads the SQL engine itself
def test_search_runs_a_fixed_number_of_queries(store: SqlStore, exp: Experiment) -> None:
    for i in range(40):
        r = store.create_run(exp.experiment_id)
        store.log_params(r.run_id, {"i": i, "j": -i})
        store.set_tags(r.run_id, {"t": "x"})
        store.log_metrics(r.run_id, [Metric("m", float(i)), Metric("n", 1.0)])
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(store._engine, "before_cursor_execute", count)
    try:
        page = store.search_runs(
            [exp.experiment_id], filter="metrics.m >= 5", order_by=["metrics.n"], max_results=30
        )
    finally:
        event.remove(store._engine, "before_cursor_execute", count)
    assert len(page) == 30 and all(r.params and r.tags and len(r.metrics) == 2 for r in page)
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # One count of the experiments' runs (a sort on a metric reads its value index when they
    # are many, see _search._metric_walk_pays), the page, then params, metrics and tags.
    assert len(queries) == 5


@pytest.mark.sql_only  # the schema itself
def test_0006_metric_value_index_downgrades_and_upgrades_again(
    store: SqlStore, exp: Experiment
) -> None:
    import sqlalchemy as sa
    from alembic import command

    from modelloop.store._sql import HEAD_REVISION
    from modelloop.store._sql._migrate import alembic_config, current_revision

    def indexes() -> set[str]:
        with store._engine.connect() as conn:
            return {i["name"] for i in sa.inspect(conn).get_indexes("latest_metrics")}

    ids = []
    for v in (0.2, 0.9, 0.5):
        r = store.create_run(exp.experiment_id)
        store.log_metrics(r.run_id, [Metric("m", v)])
        ids.append(r.run_id)
    assert "ix_latest_metrics_key_value" in indexes()
    with store._engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    with store._engine.begin() as conn:
        assert current_revision(conn) == "0005"
    assert "ix_latest_metrics_key_value" not in indexes()
    assert store.upgrade() == HEAD_REVISION
    assert "ix_latest_metrics_key_value" in indexes()
    page = store.search_runs([exp.experiment_id], order_by=["metrics.m DESC"])
    assert [r.run_id for r in page] == [ids[1], ids[2], ids[0]]
