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


def get_store(url: str, *, token: str | None = None, ca_bundle: str | None = None) -> Store:
    """Open the store at a SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``),
    or on a modelloop server (``http(s)://host:port``, with ``token``; default
    ``MODELLOOP_TOKEN``, and ``MODELLOOP_CA_BUNDLE`` for a private CA).

    A SQL schema is created or upgraded on first use.
    """
    from modelloop._config import is_server_url
    from modelloop.store._sql import SqlStore

    if is_server_url(url):
        import os

        from modelloop.store._http import HttpStore

        return HttpStore(
            url,
            token=token or os.environ.get("MODELLOOP_TOKEN") or None,
            ca_bundle=ca_bundle or os.environ.get("MODELLOOP_CA_BUNDLE") or None,
        )

    return SqlStore(url)
