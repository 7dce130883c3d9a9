"""Fixtures of the monitoring tests: the drift benchmark workload (benchmarks/drift_workload.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from modelloop import Client, Settings
from modelloop.demo import replay_frame
from modelloop.monitoring import (
    ColumnDrift,
    ColumnQuality,
    DriftResult,
    MetricRow,
    MonitorResult,
    PerformanceReport,
    QualityReport,
)


def _load_workload() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "drift_workload.py"
    spec = importlib.util.spec_from_file_location("modelloop_bench_drift_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def workload() -> ModuleType:
    """The drift workload of issue 4 (20 normal + 5 categorical columns, 4 drifted)."""
    return _load_workload()


@pytest.fixture(scope="session")
def workload_frames(workload: ModuleType):  # type: ignore[no-untyped-def]
    """(reference, current) of 30,000 rows each."""
    return workload.make_frames(30_000)


def _drift(drifted: set[str]) -> DriftResult:
    cols = tuple(
        ColumnDrift(
            c, "numeric", "wasserstein", 0.5 if c in drifted else 0.01, None, 0.1, c in drifted
        )
        for c in ("a", "b", "c", "d")
    )
    return DriftResult(cols, 1000, 1000, 0.05, "benjamini-hochberg", 0.5)


def build_result(
    drifted: set[str], accuracy: float, unseen: bool = False, ts: int = 0
) -> MonitorResult:
    quality = QualityReport(
        (
            ColumnQuality(
                "c",
                "categorical",
                0.0,
                0.0,
                None,
                0.2 if unseen else 0.0,
                (),
                ("unseen_categories",) if unseen else (),
            ),
        ),
        1000,
        0.05,
        0.01,
        0.01,
    )
    perf = PerformanceReport(
        "classification", MetricRow({}, 1000, {"accuracy": accuracy, "f1": 0.5, "auc": None})
    )
    return MonitorResult("flights", _drift(drifted), quality, perf, {"kind": "calendar"}, ts)


@pytest.fixture
def make_result():  # type: ignore[no-untyped-def]
    """Build a MonitorResult: drifted columns among a-d, an accuracy, an unseen-category breach."""
    return build_result


VERSIONED_MODEL = "cancer"


@pytest.fixture
def two_versions(tmp_path: Path, breast_cancer, monkeypatch: pytest.MonkeyPatch):
    """v1 trained on the small tumours, v2 (the champion) on the large ones: different models,
    different references. v1 answered 400 requests, v2 the other 169; every request was labelled."""
    X, y = breast_cancer
    small = X["mean radius"] < X["mean radius"].median()
    client = Client(Settings(home=tmp_path / "home", user="tester"))
    monkeypatch.setenv("MODELLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELLOOP_STORE_URL", raising=False)
    monkeypatch.delenv("MODELLOOP_ARTIFACT_ROOT", raising=False)
    refs = {}
    for version, part in ((1, small), (2, ~small)):
        model = LogisticRegression(max_iter=5000, C=0.05 if version == 1 else 5.0)
        model.fit(X[part], y[part])
        with client.start_run("cancer") as run:
            run.log_model(model, input_example=X.head(3))
        mv = client.register_model(run.run_id, VERSIONED_MODEL, reference_data=X[part])
        assert mv.version == version
        refs[version] = (model, X[part])
    client.set_alias(VERSIONED_MODEL, "champion", 2)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    # measurement noise: no logged row equals a reference row, so no exact ties that rounding
    # of another batch size could order differently
    data = (X * rng.normal(1.0, 0.02, size=X.shape)).assign(label=y)
    logged = {}
    for version, rows in ((1, order[:400]), (2, order[400:])):
        _, frame = replay_frame(
            client, f"{VERSIONED_MODEL}/{version}", data.iloc[rows], label="label", minutes=30
        )
        logged[version] = frame
    yield client, refs, logged
    client.close()
