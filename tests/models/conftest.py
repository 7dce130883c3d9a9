"""Fixtures for the model package tests: scikit-learn's bundled data sets and fitted models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(autouse=True)
def _isolated_settings(home: Path) -> Path:
    """Every test runs with a fresh MODELLOOP_HOME and no MODELLOOP_TRUSTED_TYPES from outside."""
    return home


@pytest.fixture(scope="session")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def wine() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def mixed() -> tuple[pd.DataFrame, np.ndarray]:
    """A frame with every kind of column a model sees, including nullable Int64 with pd.NA."""
    rng = np.random.default_rng(0)
    n = 300
    X = pd.DataFrame(
        {
            "age": pd.array(rng.integers(18, 90, n), dtype="Int64"),
            "income": rng.normal(50.0, 10.0, n),
            "color": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "city": rng.choice(["paris", "lyon"], n),
        }
    )
    X.loc[::7, "age"] = pd.NA
    X.loc[::11, "income"] = np.nan
    y = ((X["age"].fillna(50) > 50).to_numpy() ^ (X["color"] == "red").to_numpy()).astype(int)
    return X, y
