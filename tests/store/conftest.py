"""Fixtures of the shared store suite: every test runs once per backend (see ``store_url``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelloop.store import Experiment, Run
from modelloop.store._sql import SqlStore


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """A store on a brand-new database of the backend under test."""
    s = SqlStore(store_url)
    yield s
    s.close()


@pytest.fixture
def exp(store: SqlStore) -> Experiment:
    return store.create_experiment("exp")


@pytest.fixture
def run(store: SqlStore, exp: Experiment) -> Run:
    return store.create_run(exp.experiment_id, name="the-run", user="alice")
