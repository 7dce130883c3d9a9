"""The control-plane application: the store contract, the registry and artifact blobs over
HTTP under ``/api/v1``, every route behind a role, errors as JSON that never carry a trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelloop._config import Settings
from modelloop.artifacts import ArtifactStore
from modelloop.exceptions import ModelloopError
from modelloop.server._common import json_response
from modelloop.server._idempotency import IdempotencyKeys
from modelloop.store._http._codec import API_PREFIX
from modelloop.store._sql import SqlStore

__all__ = ["API_PREFIX", "DASHBOARD_PREFIX", "DEFAULT_MAX_UPLOAD_MB", "create_app"]

log = logging.getLogger("modelloop.server")

DEFAULT_MAX_UPLOAD_MB = 2048
#: The largest JSON request body (a metric batch of 10,000 values is about 0.5 MB).
MAX_JSON_BYTES = 32 << 20
_BLOBS = f"{API_PREFIX}/artifacts/blobs/"

_HTTP_KINDS = {
    400: "InvalidInput",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    422: "InvalidInput",
}


def create_app(
    store: SqlStore,
    artifacts: ArtifactStore,
    settings: Settings | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20,
) -> FastAPI:
    """The FastAPI app over ``store`` and ``artifacts``.

    The schema is brought to the newest revision and the server's idempotency table created
    now, so the first request does no setup. Uploads are limited to ``max_upload_bytes`` and
    streamed into the artifact store (:meth:`ArtifactStore.blob_writer`).
    """
    from modelloop import __version__
    from modelloop.server import (
        _artifact_routes,
        _ops_routes,
        _registry_routes,
        _tracking_routes,
    )

    if max_upload_bytes < 1:
        raise ValueError("max_upload_bytes must be positive")
    app = FastAPI(
        title="modelloop control plane",
        version=__version__,
        description="The modelloop store, registry and artifacts over HTTP. Every route needs a "
        "bearer token once users exist; roles: viewer < editor < deployer < admin.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.artifacts = artifacts
    app.state.settings = settings or Settings.from_env()
    app.state.max_upload_bytes = max_upload_bytes
    app.state.revision = store.upgrade()
    app.state.idempotency = IdempotencyKeys(store)
    app.state.idempotency.create_table()

    for module in (_tracking_routes, _registry_routes, _ops_routes, _artifact_routes):
        app.include_router(module.router, prefix=API_PREFIX)
    from modelloop.server._access_routes import router as access_router

    app.include_router(access_router, prefix=API_PREFIX)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _mount_dashboard(app, store, artifacts)

    app.add_middleware(_JsonBodyLimit, limit=MAX_JSON_BYTES)
    app.add_exception_handler(ModelloopError, _library_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


#: Where the server serves the web dashboard (when the ``ui`` extra is installed).
DASHBOARD_PREFIX = "/ui"


def _mount_dashboard(app: FastAPI, store: SqlStore, artifacts: ArtifactStore) -> None:
    """The web dashboard under :data:`DASHBOARD_PREFIX`, with login once the store has users;
    skipped (with a log line) when the ``ui`` extra is not installed."""
    try:
        import jinja2  # noqa: F401
        import plotly  # noqa: F401
    except ImportError:
        log.info("the web dashboard is off: install modelloop[ui] to serve it at /ui")
        return
    from fastapi.responses import RedirectResponse

    from modelloop._client import Client
    from modelloop.ui import create_app as create_dashboard

    client = Client(app.state.settings, store=store, artifacts=artifacts)
    app.mount(DASHBOARD_PREFIX, create_dashboard(client, login=True), name="ui")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(DASHBOARD_PREFIX + "/", status_code=307)


def error_body(kind: str, message: str, status: int, headers: Any = None) -> Response:
    response = json_response({"error": kind, "message": message}, status=status)
    if headers:
        response.headers.update(headers)
    return response


async def _library_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelloopError)
    status = exc.http_status
    if status >= 500:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_body(type(exc).__name__, str(exc), status)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_body("InvalidInput", "; ".join(parts) or "invalid request", 422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException | HTTPException)
    kind = _HTTP_KINDS.get(exc.status_code, "HTTPError")
    detail = exc.detail if isinstance(exc.detail, str) else kind
    return error_body(kind, detail, exc.status_code, getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The trace goes to the server's log, never into the response.
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_body("ServerError", "internal server error", 500)


class _JsonBodyLimit:
    """Requests other than blob uploads are read whole (JSON), so their size is bounded: a
    body must declare its length (411 without), and a length past ``limit`` is refused with
    413 before it is read. Blob uploads stream and check their own limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_BLOBS):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        status, message = 0, ""
        if length is None:
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                status, message = 411, "send a Content-Length with a request body"
        elif not length.isdigit():
            status, message = 400, "Content-Length must be a number of bytes"
        elif int(length) > self.limit:
            status, message = 413, f"the request body is larger than {self.limit} bytes"
        if not status:
            await self.app(scope, receive, send)
            return
        kind = {400: "InvalidInput", 411: "InvalidInput", 413: "PayloadTooLarge"}[status]
        response = error_body(kind, message, status)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
