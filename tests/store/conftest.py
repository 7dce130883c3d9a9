"""Fixtures of the shared store suite: every test runs once per backend (see ``store_url``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from modelloop.store import Experiment, Run, Store
from modelloop.store._sql import SqlStore


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of the shared suite runs on the SQL store itself and on ``HttpStore`` through a
    real server over the same database, except those marked ``sql_only`` (about SQL internals:
    the schema, the engine, what a second process opening the database sees)."""
    if "store_via" in metafunc.fixturenames:
        sql_only = metafunc.definition.get_closest_marker("sql_only") is not None
        metafunc.parametrize("store_via", ["sql"] if sql_only else ["sql", "http"])


@pytest.fixture
def store(
    store_url: str, store_via: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Store]:
    """A store on a brand-new database of the backend under test: the SQL store, or the HTTP
    store of a server process forked for this test on that database."""
    if store_via == "sql":
        s = SqlStore(store_url)
        yield s
        s.close()
        return
    from modelloop.store._http import HttpStore

    launcher = request.getfixturevalue("server_launcher")
    server = launcher.start(store_url, tmp_path / "server-artifacts", tmp_path / "server-home")
    h = HttpStore(server.url)
    try:
        yield h
    finally:
        h.close()
        launcher.stop(server)


@pytest.fixture
def exp(store: SqlStore) -> Experiment:
    return store.create_experiment("exp")


@pytest.fixture
def run(store: SqlStore, exp: Experiment) -> Run:
    return store.create_run(exp.experiment_id, name="the-run", user="alice")


def run_in_threads(work: Callable[[Any], object], args: Sequence[Any]) -> list[object]:
    """Call ``work(a)`` for each ``a`` in its own thread, all released together at a barrier.

    Returns one outcome per call, in completion order: the return value, or the exception raised
    (a thread's exception is otherwise lost)."""
    start = threading.Barrier(len(args))
    outcomes: list[object] = []

    def call(a: Any) -> None:
        start.wait()
        try:
            outcomes.append(work(a))
        except BaseException as e:
            outcomes.append(e)

    threads = [threading.Thread(target=call, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.fixture
def in_threads() -> Callable[[Callable[[Any], object], Sequence[Any]], list[object]]:
    """:func:`run_in_threads`, for tests that race calls against one store."""
    return run_in_threads
