"""Module-level shortcuts over :func:`modelloop._client.default_client`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelloop._client import default_client

if TYPE_CHECKING:
    from modelloop.models import ModelPackage
    from modelloop.store import ModelVersion, Page, Run
    from modelloop.tracking import ActiveRun

__all__ = ["get_run", "load_model", "register_model", "search_runs", "set_alias", "start_run"]


def start_run(
    experiment: str = "default",
    *,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    flush_every: int = 1000,
    flush_interval: float = 5.0,
) -> ActiveRun:
    """Start a run; see :meth:`modelloop.Client.start_run`."""
    return default_client().start_run(
        experiment, name=name, tags=tags, flush_every=flush_every, flush_interval=flush_interval
    )


def get_run(run_id: str) -> Run:
    """The run with its params, latest metrics and tags."""
    return default_client().get_run(run_id)


def search_runs(
    experiment: str | Sequence[str] | None = None,
    *,
    filter: str = "",
    order_by: Sequence[str] = (),
    max_results: int = 100,
    page_token: str | None = None,
) -> Page[Run]:
    """Search runs in SQL; see :meth:`modelloop.Client.search_runs`."""
    return default_client().search_runs(
        experiment,
        filter=filter,
        order_by=order_by,
        max_results=max_results,
        page_token=page_token,
    )


def register_model(run: Any, name: str, *, artifact_path: str = "model") -> ModelVersion:
    """Register a run's logged model as the next version of ``name``."""
    return default_client().register_model(run, name, artifact_path=artifact_path)


def set_alias(name: str, alias: str, version: int) -> int | None:
    """Point ``name@alias`` at ``version``; return the previous version."""
    return default_client().set_alias(name, alias, version)


def load_model(uri: str, *, allow_pickle: bool = False) -> ModelPackage:
    """Load ``models:/name@alias``, ``models:/name/3`` or ``runs:/<id>/model``."""
    return default_client().load_model(uri, allow_pickle=allow_pickle)
