"""Fixtures for pipeline tests: a small breast-cancer pipeline on a CSV file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

CANCER_FEATURES = [
    "mean_radius",
    "mean_texture",
    "mean_smoothness",
    "worst_area",
    "worst_concavity",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Any:
    """One BLAS/OpenMP thread, here and in worker processes: the test machine has two cores
    shared with other test processes, and oversubscribed OpenMP spins instead of working."""
    from threadpoolctl import threadpool_limits

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with threadpool_limits(1):
        yield


@pytest.fixture
def cancer_csv(tmp_path: Path, breast_cancer: Any) -> Path:
    """Five breast-cancer features, a ``size`` segment column and the target ``label``."""
    X, y = breast_cancer
    frame = X.rename(columns=lambda c: c.replace(" ", "_"))[CANCER_FEATURES].copy()
    frame["size"] = (frame["mean_radius"] > frame["mean_radius"].median()).map(
        {True: "big", False: "small"}
    )
    frame["label"] = y.to_numpy()
    path = tmp_path / "project" / "cancer.csv"
    path.parent.mkdir()
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def cancer_spec(cancer_csv: Path) -> dict[str, Any]:
    """A complete spec dict (data path relative to the CSV's folder, the pipeline's base dir)."""
    return {
        "name": "cancer",
        "data": {"path": cancer_csv.name},
        "target": "label",
        "features": list(CANCER_FEATURES),
        "split": {"method": "random", "test_size": 0.3, "seed": 1},
        "model": {
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": {"max_iter": 20, "random_state": 0},
        },
        "evaluation": {"segments": ["size"], "min_segment_rows": 20},
        "explain": {"max_rows": 60, "n_local": 3},
        "gates": ["auc >= 0.8"],
        "register": {"model_name": "cancer", "alias": "champion"},
    }


@pytest.fixture
def write_spec(cancer_csv: Path):  # type: ignore[no-untyped-def]
    """Write a spec dict as ``modelloop.yaml`` next to the CSV; return its path."""
    import yaml

    def write(spec: dict[str, Any]) -> Path:
        path = cancer_csv.parent / "modelloop.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli() -> typer.Typer:
    """A Typer app with ``modelloop pipeline`` under the name ``pipeline``."""
    from modelloop.cli._pipeline import pipeline_app

    app = typer.Typer()
    app.add_typer(pipeline_app, name="pipeline")
    return app
