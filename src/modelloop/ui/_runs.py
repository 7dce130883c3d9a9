"""Pages about experiments and runs: the runs table, one run, a comparison, metric series."""

from __future__ import annotations

import json
import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.ui._app import client_of, render
from modelloop.ui._charts import downsample, finite, series_json
from modelloop.ui._query import (
    ATTRIBUTE_SORTS,
    PAGE_SIZES,
    TableState,
    available_columns,
    column_value,
    default_columns,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from modelloop._client import Client
    from modelloop.store import Run, RunArtifact

__all__ = [
    "artifact_download",
    "compare_page",
    "experiments_page",
    "metric_series",
    "metric_series_many",
    "run_page",
    "runs_page",
]

MAX_COMPARE = 20
#: points per series sent to the browser; a zoom asks again for the visible range
CHART_POINTS = 1000
#: a signature or metadata file larger than this is not shown inline
_INLINE_LIMIT = 2_000_000


def experiments_page(request: Request) -> Response:
    """Every experiment, oldest first."""
    experiments = client_of(request).store.list_experiments()
    return render(request, "experiments.html", {"title": "Experiments", "experiments": experiments})


def runs_page(request: Request) -> Response:
    """One page of an experiment's runs, filtered and sorted in the store."""
    store = client_of(request).store
    experiment = store.get_experiment(int(request.path_params["experiment_id"]))
    state = TableState.from_query(request.query_params.multi_items())
    error = None
    try:
        page = store.search_runs(
            [experiment.experiment_id],
            filter=state.filter,
            order_by=state.order_by,
            max_results=state.size,
            page_token=state.page_token,
        )
        runs = page.items
        next_token = page.next_page_token
    except InvalidInput as exc:  # a bad filter is shown next to the filter box
        error, runs, next_token = str(exc), (), None
    columns = state.columns if state.columns is not None else default_columns(runs)
    rows = [(run, [column_value(run, c) for c in columns]) for run in runs]
    return render(
        request,
        "runs.html",
        {
            "title": f"Runs of {experiment.name}",
            "experiment": experiment,
            "state": state,
            "columns": columns,
            "choices": available_columns(runs, columns),
            "rows": rows,
            "next_query": state.next_query(next_token) if next_token else None,
            "previous_query": state.previous_query(),
            "error": error,
            "attribute_sorts": ATTRIBUTE_SORTS,
            "page_sizes": PAGE_SIZES,
        },
        status_code=400 if error else 200,
    )


def _packages(artifacts: list[RunArtifact]) -> list[str]:
    """Folders of the run's artifacts that hold a model package (they have a metadata file)."""
    from modelloop.models._package import METADATA_FILE

    found = {
        posixpath.dirname(a.path)
        for a in artifacts
        if posixpath.basename(a.path) == METADATA_FILE and "/" in a.path
    }
    return sorted(found)


def _json_artifact(client: Client, artifacts: list[RunArtifact], path: str) -> Any:
    item = next((a for a in artifacts if a.path == path), None)
    if item is None or item.size > _INLINE_LIMIT:
        return None
    try:
        return json.loads(client.artifacts.read_bytes(item.digest))
    except ValueError:
        return None


def run_page(request: Request) -> Response:
    """Params, tags, metric charts, artifacts, datasets and logged models of one run."""
    from modelloop.models._package import METADATA_FILE, SIGNATURE_FILE

    client = client_of(request)
    run = client.store.get_run(request.path_params["run_id"])
    experiment = client.store.get_experiment(run.experiment_id)
    artifacts = client.store.list_run_artifacts(run.run_id)
    models = []
    for prefix in _packages(artifacts):
        signature = _json_artifact(client, artifacts, f"{prefix}/{SIGNATURE_FILE}")
        metadata = _json_artifact(client, artifacts, f"{prefix}/{METADATA_FILE}")
        models.append({"path": prefix, "signature": signature, "metadata": metadata})
    versions = [
        v
        for m in client.store.list_registered_models()
        for v in client.store.list_model_versions(m.name)
        if v.run_id == run.run_id
    ]
    charts = {
        "run_id": run.run_id,
        "keys": sorted(run.metrics),
        "series_url": str(request.url_for("metric_series_many")),
    }
    return render(
        request,
        "run.html",
        {
            "title": f"Run {run.name}",
            "run": run,
            "experiment": experiment,
            "artifacts": artifacts,
            "datasets": client.store.list_run_datasets(run.run_id),
            "models": models,
            "versions": versions,
            "charts": charts,
        },
    )


def artifact_download(request: Request) -> Response:
    """One artifact, offered as a download. The blob is copied to a temporary file and its
    digest verified before the first byte is sent, so a corrupted blob is an error page, never
    a truncated download; the copy is removed once sent."""
    import shutil
    import tempfile

    from starlette.background import BackgroundTask
    from starlette.responses import FileResponse

    from modelloop.artifacts import validate_artifact_path

    client = client_of(request)
    run_id = request.path_params["run_id"]
    path = validate_artifact_path(request.path_params["path"])
    item = next((a for a in client.store.list_run_artifacts(run_id, path) if a.path == path), None)
    if item is None:
        raise NotFound(f"run {run_id} has no artifact {path!r}")
    folder = tempfile.mkdtemp(prefix="modelloop-ui-")
    try:
        local = client.artifacts.get_file(item.digest, f"{folder}/blob")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        local,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(posixpath.basename(path))}"
        },
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    text = request.query_params.get(name, "")
    if text == "":
        return default
    try:
        return int(float(text))
    except ValueError:
        raise InvalidInput(f"{name}={text[:40]!r} is not a number") from None


def _series_args(request: Request) -> tuple[str, int, int | None, int | None]:
    key = request.query_params.get("key", "")
    if not key:
        raise InvalidInput("query parameter 'key' (the metric) is missing")
    points = _int_param(request, "points", CHART_POINTS) or CHART_POINTS
    if not 4 <= points <= 20_000:
        raise InvalidInput(f"points={points}: use 4 to 20000")
    return key, points, _int_param(request, "min_step", None), _int_param(request, "max_step", None)


def _series(
    client: Client, run_id: str, key: str, points: int, low: int | None, high: int | None
) -> dict[str, Any]:
    history = client.store.get_metric_history(run_id, key)
    if not history:
        client.store.get_run(run_id)  # NotFound for a missing run, else an empty series
    steps = np.fromiter((m.step for m in history), dtype=np.int64, count=len(history))
    values = np.fromiter((m.value for m in history), dtype=np.float64, count=len(history))
    if low is not None or high is not None:
        inside = np.ones(len(steps), dtype=bool)
        if low is not None:
            inside &= steps >= low
        if high is not None:
            inside &= steps <= high
        steps, values = steps[inside], values[inside]
    xs, ys = downsample(steps, values, points)
    return {"run_id": run_id, "key": key, "total": len(steps), **series_json(xs, ys)}


def metric_series(request: Request) -> Response:
    """``{"key", "x", "y", "total"}``: one metric by step, downsampled to ``points`` (keeping
    each bucket's extremes), optionally only between ``min_step`` and ``max_step``."""
    from starlette.responses import JSONResponse

    key, points, low, high = _series_args(request)
    run_id = request.path_params["run_id"]
    return JSONResponse(_series(client_of(request), run_id, key, points, low, high))


def _run_ids(request: Request) -> list[str]:
    """The ``run=`` query parameters, blanks and repeats dropped, in the order given."""
    return list(dict.fromkeys(i for i in request.query_params.getlist("run") if i))


def metric_series_many(request: Request) -> Response:
    """``{"key", "series": [...]}``: :func:`metric_series` for 1 to 20 runs (``run=`` repeated)
    in one request, in the order given."""
    from starlette.responses import JSONResponse

    key, points, low, high = _series_args(request)
    ids = _run_ids(request)
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise InvalidInput(f"give 1 to {MAX_COMPARE} runs (run=ID), got {len(ids)}")
    client = client_of(request)
    series = [_series(client, run_id, key, points, low, high) for run_id in ids]
    return JSONResponse({"key": key, "series": series})


def _compare_runs(request: Request) -> list[Run]:
    ids = _run_ids(request)
    if not 2 <= len(ids) <= MAX_COMPARE:
        raise InvalidInput(f"compare takes 2 to {MAX_COMPARE} runs, got {len(ids)}")
    store = client_of(request).store
    return [store.get_run(i) for i in ids]


def _as_number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and np.isfinite(value) else None


def compare_page(request: Request) -> Response:
    """2 to 20 runs side by side: params (differences marked), latest metrics, overlaid
    curves, and parallel coordinates of numeric params against a chosen metric."""
    runs = _compare_runs(request)
    param_keys = sorted({k for r in runs for k in r.params})
    metric_keys = sorted({k for r in runs for k in r.metrics})
    params = [
        (k, [r.params.get(k) for r in runs], len({r.params.get(k) for r in runs}) > 1)
        for k in param_keys
    ]
    metrics = [(k, [r.metrics.get(k) for r in runs]) for k in metric_keys]
    chosen = request.query_params.get("metric") or (metric_keys[0] if metric_keys else "")
    if chosen and chosen not in metric_keys:
        raise InvalidInput(f"metric {chosen!r} is not logged by any of these runs")
    numeric = [k for k in param_keys if all(_as_number(r.params.get(k)) is not None for r in runs)]
    dims = [
        {"label": f"params.{k}", "values": [_as_number(r.params.get(k)) for r in runs]}
        for k in numeric
    ]
    if chosen:
        dims.append(
            {
                "label": f"metrics.{chosen}",
                "values": [finite(r.metrics.get(chosen)) for r in runs],
            }
        )
    charts = {
        "runs": [
            {
                "run_id": r.run_id,
                "name": r.name,
            }
            for r in runs
        ],
        "keys": metric_keys,
        "series_url": str(request.url_for("metric_series_many")),
        "parcoords": dims,
        "color": chosen,
    }
    return render(
        request,
        "compare.html",
        {
            "title": f"Compare {len(runs)} runs",
            "runs": runs,
            "params": params,
            "metrics": metrics,
            "metric_keys": metric_keys,
            "chosen": chosen,
            "charts": charts,
        },
    )
