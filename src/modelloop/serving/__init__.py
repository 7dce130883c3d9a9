"""Model serving: Open Inference Protocol V2 and a plain JSON endpoint over registry models.

``create_app(["fraud@champion"])`` builds the ASGI app; ``modelloop serve`` runs it on uvicorn.
Requests are validated against the model signature, gathered into micro-batches, routed between
a champion and an optional canary or shadow challenger, and logged to the prediction log that
``modelloop monitor`` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelloop.serving._app import ServeConfig, create_app
    from modelloop.serving._server import serve

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("ServeConfig", "create_app"):
        from modelloop.serving import _app

        return getattr(_app, name)
    if name == "serve":
        from modelloop.serving._server import serve

        return serve
    raise AttributeError(name)
