"""Pages about registered models: the list, and one model's versions, aliases, lineage (run →
datasets → version, and the pipeline run that made it), ONNX form, and the history of its
aliases from the audit log (who moved which alias when)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import ModelloopError, NotFound
from modelloop.ui._app import client_of, render

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from modelloop._client import Client


__all__ = ["model_page", "models_page"]

#: the ONNX description blob is a small JSON document; anything larger is not read
_ONNX_DESCRIPTION_LIMIT = 1_000_000
#: tags the page shows in their own columns, or that are bookkeeping
_PIPELINE_RUN_TAG = "modelloop.pipeline_run_id"
_REFERENCE_TAG = "modelloop.reference_profile"


def models_page(request: Request) -> Response:
    """Every registered model with its latest version and aliases."""
    from modelloop.ui._auth import principal

    who = principal(request)
    models = client_of(request).store.list_registered_models()
    if who.models is not None:  # a user limited to some models sees those alone
        models = [m for m in models if m.name in who.models]
    return render(request, "models.html", {"title": "Models", "models": models})


def _onnx(client: Client, digest: str) -> dict[str, Any] | None:
    """What the ONNX form of a version is (its digest, the rows it was checked on, the
    converter's libraries), from the description the registry stored; None without one."""
    if not digest:
        return None
    found: dict[str, Any] = {
        "digest": digest,
        "onnx_sha256": "",
        "check_rows": None,
        "libraries": {},
        "unreadable": False,
    }
    try:
        blob = client.artifacts.read_bytes(digest)
        if len(blob) <= _ONNX_DESCRIPTION_LIMIT:
            description = json.loads(blob)
            if isinstance(description, dict):
                found["onnx_sha256"] = str(description.get("onnx_sha256") or "")
                found["check_rows"] = description.get("check_rows")
                libraries = description.get("libraries")
                if isinstance(libraries, dict):
                    found["libraries"] = {str(k): str(v) for k, v in libraries.items()}
    except (ModelloopError, OSError, ValueError):  # the tag stands; its details are unreadable
        found["unreadable"] = True
    return found


def model_page(request: Request) -> Response:
    """One model: versions (with their run, training datasets, pipeline run and ONNX form),
    aliases, and who moved which alias when."""
    from modelloop._client import DATASET_TAG, PACKAGE_TAG
    from modelloop.registry._onnx import ONNX_TAG

    client = client_of(request)
    store = client.store
    model = store.get_registered_model(request.path_params["name"])
    versions = store.list_model_versions(model.name)
    rows: list[dict[str, Any]] = []
    for mv in reversed(versions):  # newest first
        run = None
        datasets = []
        if mv.run_id:
            try:
                run = store.get_run(mv.run_id)
                datasets = store.list_run_datasets(mv.run_id)
            except NotFound:  # the version outlived its run's metadata: show the id alone
                run = None
        pipeline_run = None
        pipeline_run_id = mv.tags.get(_PIPELINE_RUN_TAG, "")
        if pipeline_run_id and pipeline_run_id != mv.run_id:
            try:
                pipeline_run = store.get_run(pipeline_run_id)
            except NotFound:
                pipeline_run = None
        rows.append(
            {
                "version": mv,
                "run": run,
                "datasets": datasets,
                "pipeline_run": pipeline_run,
                "pipeline_run_id": pipeline_run_id,
                "onnx": _onnx(client, mv.tags.get(ONNX_TAG, "")),
                "reference": bool(mv.tags.get(_REFERENCE_TAG)),
                "dataset_digest": mv.tags.get(DATASET_TAG, ""),
                "package_digest": mv.tags.get(PACKAGE_TAG, ""),
                "tags": {k: v for k, v in mv.tags.items() if not k.startswith("modelloop.")},
            }
        )
    history = [
        e for e in store.list_audit_events(model=model.name) if e.action.startswith("alias.")
    ]
    history.reverse()  # newest first
    return render(
        request,
        "model.html",
        {"title": f"Model {model.name}", "model": model, "rows": rows, "history": history},
    )
