"""Experiments, runs, params, tags, metrics, run artifacts, datasets and lineage."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from modelloop.access import Role
from modelloop.server._auth import Principal, require
from modelloop.server._common import actor, audit, json_response, store_of, write
from modelloop.store._records import RunArtifact, RunOwner, RunStatus
from modelloop.store._sql import SqlStore
from modelloop.store._sql._tracking import MetricColumns

__all__ = ["router"]

router = APIRouter(tags=["tracking"])

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Editor = Annotated[Principal, Depends(require(Role.EDITOR))]


# Request bodies. Values the store checks itself are typed ``Any`` here, so that a bad value
# gets the store's own error (naming the field), exactly as in-process.


class ExperimentIn(BaseModel):
    name: Any


class RunIn(BaseModel):
    experiment_id: Any
    name: Any = None
    user: Any = "unknown"
    tags: Any = None
    start_time: Any = None
    #: ``{"host", "pid", "process_key"}`` or null
    owner: Any = None


class HeartbeatIn(BaseModel):
    run_ids: Any
    now: Any = None


class EndStaleIn(BaseModel):
    status: Any = RunStatus.FAILED.value
    stale_after_ms: Any = None
    now: Any = None


class EndRunIn(BaseModel):
    """The final status, and optionally the run's last metric values (as in ``MetricsIn``),
    stored in the same transaction as the end."""

    status: Any
    end_time: Any = None
    keys: list[Any] = Field(default_factory=list)
    values: list[Any] = Field(default_factory=list)
    steps: list[Any] = Field(default_factory=list)
    timestamps: list[Any] = Field(default_factory=list)


class ParamsIn(BaseModel):
    params: Any


class TagsIn(BaseModel):
    tags: Any


class MetricsIn(BaseModel):
    """A batch of metric values as columns: one entry per value in each list."""

    keys: list[Any]
    values: list[Any]
    steps: list[Any]
    timestamps: list[Any]


class SearchIn(BaseModel):
    experiment_ids: Any
    filter: Any = ""
    order_by: Any = Field(default_factory=list)
    max_results: Any = 100
    page_token: Any = None


class ArtifactIn(BaseModel):
    run_id: Any
    path: Any
    digest: Any
    size: Any


class ArtifactsIn(BaseModel):
    artifacts: list[ArtifactIn]
    #: log as one artifact (``log_run_artifact``) rather than a batch
    single: bool = False


class DatasetIn(BaseModel):
    name: Any
    digest: Any
    source: Any
    num_rows: Any
    schema_: Any = Field(default=None, alias="schema")
    profile: Any = None


class LinkIn(BaseModel):
    dataset_id: Any
    role: Any


# -- experiments ---------------------------------------------------------------------------


@router.get("/experiments", summary="List experiments")
def list_experiments(request: Request, principal: Viewer) -> Response:
    return json_response(store_of(request).list_experiments())


@router.post("/experiments", summary="Create an experiment")
def create_experiment(request: Request, body: ExperimentIn, principal: Editor) -> Response:
    def work() -> Any:
        exp = store_of(request).create_experiment(body.name)
        audit(request, principal, "experiment.create", "experiment", str(exp.experiment_id))
        return exp

    return write(request, principal, work)


@router.post("/experiments/get-or-create", summary="The experiment with a name, created if missing")
def get_or_create_experiment(request: Request, body: ExperimentIn, principal: Editor) -> Response:
    def work() -> Any:
        exp = store_of(request).get_or_create_experiment(body.name)
        audit(request, principal, "experiment.get_or_create", "experiment", str(exp.experiment_id))
        return exp

    return write(request, principal, work, keyed=False)


@router.get("/experiments/by-name", summary="The experiment with a name")
def get_experiment_by_name(
    request: Request, principal: Viewer, name: Annotated[str, Query()]
) -> Response:
    return json_response(store_of(request).get_experiment_by_name(name))


@router.get("/experiments/{experiment_id}", summary="One experiment")
def get_experiment(request: Request, experiment_id: int, principal: Viewer) -> Response:
    return json_response(store_of(request).get_experiment(experiment_id))


# -- runs ----------------------------------------------------------------------------------


@router.post("/runs", summary="Start a run")
def create_run(request: Request, body: RunIn, principal: Editor) -> Response:
    def work() -> Any:
        owner = _owner(body.owner)
        run = store_of(request).create_run(
            body.experiment_id,
            name=body.name,
            user=actor(request, principal, body.user),
            tags=body.tags,
            start_time=body.start_time,
            owner=owner,
        )
        audit(request, principal, "run.create", "run", run.run_id)
        return run

    return write(request, principal, work)


@router.post("/runs/search", summary="Search runs with the store's filter grammar")
def search_runs(request: Request, body: SearchIn, principal: Viewer) -> Response:
    page = store_of(request).search_runs(
        body.experiment_ids,
        filter=body.filter,
        order_by=body.order_by,
        max_results=body.max_results,
        page_token=body.page_token,
    )
    return json_response({"items": page.items, "next_page_token": page.next_page_token})


@router.post("/runs/heartbeat", summary="Record that the owner of runs is alive")
def heartbeat_runs(request: Request, body: HeartbeatIn, principal: Editor) -> Response:
    def work() -> Any:
        return {"refreshed": store_of(request).heartbeat_runs(body.run_ids, now=body.now)}

    return write(request, principal, work, keyed=False)


@router.post("/runs/end-stale", summary="End every stale run")
def end_stale_runs(request: Request, body: EndStaleIn, principal: Editor) -> Response:
    def work() -> Any:
        kwargs: dict[str, Any] = {"now": body.now}
        if body.stale_after_ms is not None:
            kwargs["stale_after_ms"] = body.stale_after_ms
        ended = store_of(request).end_stale_runs(body.status, **kwargs)
        for run in ended:
            audit(request, principal, "run.end_stale", "run", run.run_id)
        return ended

    return write(request, principal, work)


@router.post("/runs/artifacts", summary="Record stored blobs as run artifacts")
def log_run_artifacts(request: Request, body: ArtifactsIn, principal: Editor) -> Response:
    def work() -> Any:
        items = [RunArtifact(**a.model_dump()) for a in body.artifacts]
        store = store_of(request)
        if body.single and len(items) == 1:
            store.log_run_artifact(items[0])
        else:
            store.log_run_artifacts(items)
        for run_id in sorted({a.run_id for a in items}):
            paths = [a.path for a in items if a.run_id == run_id]
            audit(request, principal, "run.artifacts", "run", run_id, after={"paths": paths})
        return None

    return write(request, principal, work, keyed=False)


@router.get("/runs/{run_id}", summary="One run with params, latest metrics and tags")
def get_run(request: Request, run_id: str, principal: Viewer) -> Response:
    return json_response(store_of(request).get_run(run_id))


@router.post("/runs/{run_id}/end", summary="End a run")
def end_run(request: Request, run_id: str, body: EndRunIn, principal: Editor) -> Response:
    metrics = _metrics(body)

    def work() -> Any:
        store = store_of(request)
        run = store.end_run(run_id, body.status, end_time=body.end_time, metrics=metrics)
        if metrics:
            audit(request, principal, "run.metrics", "run", run_id, after={"values": len(metrics)})
        audit(request, principal, "run.end", "run", run_id, after={"status": run.status.value})
        return run

    # ending twice with one status changes nothing; values appended with it must not repeat
    return write(request, principal, work, keyed=bool(metrics))


@router.post("/runs/{run_id}/params", summary="Log params")
def log_params(request: Request, run_id: str, body: ParamsIn, principal: Editor) -> Response:
    return _change_run(
        request,
        principal,
        run_id,
        "run.params",
        lambda store: store.log_params(run_id, body.params),
        lambda: dict(body.params),
    )


@router.post("/runs/{run_id}/tags", summary="Set tags")
def set_tags(request: Request, run_id: str, body: TagsIn, principal: Editor) -> Response:
    return _change_run(
        request,
        principal,
        run_id,
        "run.tags",
        lambda store: store.set_tags(run_id, body.tags),
        lambda: dict(body.tags),
    )


@router.post("/runs/{run_id}/metrics", summary="Log a batch of metric values (one transaction)")
def log_metrics(request: Request, run_id: str, body: MetricsIn, principal: Editor) -> Response:
    metrics = _metrics(body)
    return _change_run(
        request,
        principal,
        run_id,
        "run.metrics",
        lambda store: store.log_metrics(run_id, metrics),
        lambda: {"values": len(metrics)},
        keyed=True,
    )


def _metrics(body: MetricsIn | EndRunIn) -> MetricColumns:
    """The metric values of a body's columns, as the store takes them (it checks them, their
    lengths included, without an object per value)."""
    return MetricColumns(body.keys, body.values, body.steps, body.timestamps)


@router.get("/runs/{run_id}/metrics/history", summary="Every value of one metric")
def get_metric_history(
    request: Request, run_id: str, principal: Viewer, key: Annotated[str, Query()]
) -> Response:
    history = store_of(request).get_metric_history(run_id, key)
    return json_response(
        {
            "keys": [m.key for m in history],
            "values": [m.value for m in history],
            "steps": [m.step for m in history],
            "timestamps": [m.timestamp for m in history],
        }
    )


@router.get("/runs/{run_id}/metrics/count", summary="How many metric values a run has")
def count_metric_values(
    request: Request, run_id: str, principal: Viewer, key: Annotated[str | None, Query()] = None
) -> Response:
    return json_response({"count": store_of(request).count_metric_values(run_id, key)})


@router.get("/runs/{run_id}/artifacts", summary="A run's artifacts at or below a prefix")
def list_run_artifacts(
    request: Request, run_id: str, principal: Viewer, prefix: Annotated[str, Query()] = ""
) -> Response:
    return json_response(store_of(request).list_run_artifacts(run_id, prefix))


@router.post("/runs/{run_id}/datasets", summary="Link a dataset to a run in a role")
def link_dataset(request: Request, run_id: str, body: LinkIn, principal: Editor) -> Response:
    return _change_run(
        request,
        principal,
        run_id,
        "run.dataset",
        lambda store: store.link_dataset(run_id, body.dataset_id, body.role),
        lambda: {"dataset_id": body.dataset_id, "role": body.role},
    )


@router.get("/runs/{run_id}/datasets", summary="The datasets a run used")
def list_run_datasets(request: Request, run_id: str, principal: Viewer) -> Response:
    return json_response(store_of(request).list_run_datasets(run_id))


# -- datasets ------------------------------------------------------------------------------


@router.post("/datasets", summary="Register a dataset snapshot (idempotent on name and digest)")
def create_dataset(request: Request, body: DatasetIn, principal: Editor) -> Response:
    def work() -> Any:
        ds = store_of(request).create_dataset(
            name=body.name,
            digest=body.digest,
            source=body.source,
            num_rows=body.num_rows,
            schema=body.schema_,
            profile=body.profile,
        )
        audit(request, principal, "dataset.create", "dataset", str(ds.dataset_id))
        return ds

    return write(request, principal, work, keyed=False)


@router.get("/datasets", summary="Datasets by name and/or digest")
def find_datasets(
    request: Request,
    principal: Viewer,
    name: Annotated[str | None, Query()] = None,
    digest: Annotated[str | None, Query()] = None,
) -> Response:
    return json_response(store_of(request).find_datasets(name=name, digest=digest))


@router.get("/datasets/{dataset_id}", summary="One dataset")
def get_dataset(request: Request, dataset_id: int, principal: Viewer) -> Response:
    return json_response(store_of(request).get_dataset(dataset_id))


def _change_run(
    request: Request,
    principal: Principal,
    run_id: str,
    action: str,
    change: Callable[[SqlStore], object],
    after: Callable[[], Mapping[str, Any]],
    *,
    keyed: bool = False,
) -> Response:
    """A write to run ``run_id`` that answers ``null``: ``change`` on the store, then the audit
    event ``action`` with the state ``after`` gives (read once the change is done)."""

    def work() -> None:
        change(store_of(request))
        audit(request, principal, action, "run", run_id, after=after())

    return write(request, principal, work, keyed=keyed)


def _owner(value: Any) -> Any:
    """The RunOwner a body names; anything else is passed on for the store to refuse."""
    if isinstance(value, dict) and set(value) <= {"host", "pid", "process_key"} and value:
        try:
            return RunOwner(**value)
        except TypeError:
            return value
    return value
