"""Fixtures of the monitoring tests: the drift benchmark workload (benchmarks/drift_workload.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

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
