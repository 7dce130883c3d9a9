"""Pages about registered models: the list, and one model's versions, aliases, lineage and the
history of its aliases from the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelloop.exceptions import NotFound
from modelloop.ui._app import client_of, render

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response


__all__ = ["model_page", "models_page"]


def models_page(request: Request) -> Response:
    """Every registered model with its latest version and aliases."""
    from modelloop.ui._auth import principal

    who = principal(request)
    models = client_of(request).store.list_registered_models()
    if who.models is not None:  # a user limited to some models sees those alone
        models = [m for m in models if m.name in who.models]
    return render(request, "models.html", {"title": "Models", "models": models})


def model_page(request: Request) -> Response:
    """One model: versions (with their run, training datasets and ONNX form), aliases, and who
    moved which alias when."""
    from modelloop._client import DATASET_TAG, PACKAGE_TAG
    from modelloop.registry._onnx import ONNX_TAG

    store = client_of(request).store
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
        rows.append(
            {
                "version": mv,
                "run": run,
                "datasets": datasets,
                "onnx": bool(mv.tags.get(ONNX_TAG)),
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
