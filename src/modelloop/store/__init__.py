"""Metadata store: one contract (:class:`Store`); one SQLAlchemy backend (SQLite, PostgreSQL)."""

from __future__ import annotations

from modelloop.store._base import Store
from modelloop.store._records import (
    AlertEventRecord,
    AlertRecord,
    AuditEvent,
    Dataset,
    DatasetInput,
    Experiment,
    LoopEvent,
    LoopLease,
    LoopState,
    Metric,
    ModelVersion,
    MonitoringRecord,
    Page,
    RegisteredModel,
    Run,
    RunArtifact,
    RunOwner,
    RunStatus,
)

__all__ = [
    "AlertEventRecord",
    "AlertRecord",
    "AuditEvent",
    "Dataset",
    "DatasetInput",
    "Experiment",
    "LoopEvent",
    "LoopLease",
    "LoopState",
    "Metric",
    "ModelVersion",
    "MonitoringRecord",
    "Page",
    "RegisteredModel",
    "Run",
    "RunArtifact",
    "RunOwner",
    "RunStatus",
    "Store",
    "get_store",
]


def get_store(url: str) -> Store:
    """Open the store at a SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).

    The schema is created or upgraded on first use.
    """
    from modelloop.store._sql import SqlStore

    return SqlStore(url)
