"""The ASGI app: Open Inference Protocol V2, the plain JSON endpoint, admin, metrics and health.

``create_app(["fraud@champion"])`` returns a FastAPI app whose lifespan loads the models in the
background (liveness answers at once), starts their batchers, the prediction log and the alias
watcher, and on shutdown answers what is queued
and flushes the log. The app is not ready (``/v2/health/ready``) until every model is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, ModelloopError
from modelloop.serving._errors import Overloaded

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.serving._auth import Token, UserCheck

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("modelloop.serving")

#: Where the docs page's Swagger UI files are served.
DOCS_ASSETS = "/docs/assets"


@dataclass(frozen=True)
class ServeConfig:
    """How the server batches, limits, logs and drains. Every field has a working default."""

    max_batch_rows: int = 64
    max_batch_delay_ms: float = 2.0
    batching: bool = True
    max_queue_rows: int = 2048
    max_body_bytes: int = 4 * 1024 * 1024
    max_rows: int = 10_000
    #: longest string value accepted in an input column or a label, in characters (422 above)
    max_string_length: int = 65_536
    #: None: a version's registered ONNX form when it has one, else scikit-learn; True: also
    #: convert versions without one (cached under the home); False: scikit-learn always
    onnx: bool | None = None
    #: predict a package's tree form (a HistGradientBoosting model's trees, checked when it was
    #: saved) with NumPy, without loading scikit-learn; False: scikit-learn (or ONNX) always
    tree_form: bool = True
    log_predictions: bool = True
    log_max_rows: int = 10_000
    log_max_delay_s: float = 2.0
    log_max_pending_rows: int = 100_000  # rows kept while the log cannot be written
    log_max_pending_bytes: int = 256 * 1024 * 1024  # their estimated memory, at most
    max_served_ids: int = 100_000  # request ids remembered per model, to check feedback
    reload_interval_s: float = 5.0
    #: seconds per row of the operational history ($MODELLOOP_HOME/ops/<model>; 0: not recorded)
    ops_interval_s: float = 10.0
    grace_s: float = 30.0
    tokens: tuple[Token, ...] = ()
    #: checks tokens that are none of ``tokens`` against the store's users (None: no users)
    users: UserCheck | None = field(default=None, repr=False, compare=False)
    canary: tuple[tuple[str, str, float], ...] = ()  # (model, challenger, share)
    shadow: tuple[tuple[str, str], ...] = ()  # (model, challenger)

    def __post_init__(self) -> None:
        for name in (
            "max_batch_rows",
            "max_queue_rows",
            "max_body_bytes",
            "max_rows",
            "max_string_length",
            "log_max_rows",
            "log_max_pending_rows",
            "log_max_pending_bytes",
            "max_served_ids",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
        limits = {
            "max_batch_delay_ms": 1000.0,
            "log_max_delay_s": 3600.0,
            "reload_interval_s": 86400.0,
            "grace_s": 3600.0,
            "ops_interval_s": 3600.0,
        }
        for name, top in limits.items():
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or not math.isfinite(value)
                or not (0 <= value <= top)
            ):
                raise InvalidInput(f"{name} must be a number between 0 and {top:g}, got {value!r}")
        if 0 < self.ops_interval_s < 0.05:
            raise InvalidInput(
                f"ops_interval_s must be 0 (off) or >= 0.05, got {self.ops_interval_s}"
            )
        if self.log_max_pending_rows < self.log_max_rows:
            raise InvalidInput("log_max_pending_rows must be at least log_max_rows")


class _State:
    """What the handlers share: models, log, metrics, readiness."""

    def __init__(self, client: Client, config: ServeConfig, specs: Sequence[str]) -> None:
        from modelloop.serving._metrics import ServingMetrics
        from modelloop.serving._routing import ModelManager
        from modelloop.serving._served import ServedIds

        self.client = client
        self.config = config
        self.specs = list(specs)
        self.metrics = ServingMetrics()
        self.manager = ModelManager(client, config, self.metrics)
        self.served = ServedIds(config.max_served_ids)
        self.log: Any = None
        self.sink: Any = None  # the shared log root's writer (MODELLOOP_LOG_ROOT), if any
        self.ready = False
        self.draining = False
        self.startup_error: Exception | None = None
        self.on_fatal: Callable[[], None] | None = None  # set by the runner: stop the server
        self.watcher: asyncio.Task[None] | None = None

    @property
    def ops(self) -> Any:
        """The operational history recorder (None when not recorded); the metrics feed it."""
        return self.metrics.ops

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready(ready)


def create_app(
    models: Sequence[str],
    *,
    config: ServeConfig | None = None,
    client: Client | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """An ASGI app serving ``models`` (``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` each).

    The registry is ``client``'s (or a client from ``settings`` / the environment). With
    ``config.tokens`` every route needs a bearer token; without, web pages are kept out
    (:class:`~modelloop.serving._auth.OpenModeGuard`).
    """
    from modelloop import __version__

    if not models:
        raise InvalidInput("give at least one model to serve (NAME, NAME@ALIAS or NAME/VERSION)")
    config = config or ServeConfig()
    if client is None:
        from modelloop._client import Client
        from modelloop._config import Settings

        client = Client(settings or Settings.from_env())
    from modelloop.registry._uri import parse_model_spec

    names = [parse_model_spec(spec).name for spec in models]  # bad specs fail here, at once
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"models given twice: {twice}; serve each name once")
    state = _State(client, config, models)
    state.manager.loading.update(names)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models load in the background: the port opens at once, so liveness answers 200 while
        # readiness answers 400 until every model is loaded.
        loader = asyncio.get_running_loop().create_task(_load(state))
        try:
            yield
        finally:
            # The batchers' drain and the log's last flush share one grace period.
            deadline = time.monotonic() + config.grace_s
            state.set_ready(False)
            if not loader.done():
                loader.cancel()
            with contextlib.suppress(BaseException):
                await loader
            if state.watcher is not None:
                state.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state.watcher
            await state.manager.close(max(0.0, deadline - time.monotonic()))
            if state.log is not None:  # at least a moment to write what is pending
                await asyncio.to_thread(state.log.close, max(1.0, deadline - time.monotonic()))
            if state.ops is not None:  # before the sinks: on a URL root it writes through them
                await asyncio.to_thread(state.ops.close, max(1.0, deadline - time.monotonic()))
            if state.sink is not None:  # a last upload of the spool; the rest stays spooled
                from modelloop._logroot import close_sinks

                await asyncio.to_thread(close_sinks, max(1.0, deadline - time.monotonic()))

    # The docs page loads Swagger UI from files shipped in a package, never from a CDN; every
    # route, these files included, is behind the same auth. ReDoc is off (it would need more).
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(
        title="modelloop model server",
        version=__version__,
        description=(
            "Open Inference Protocol V2 under /v2, a plain JSON endpoint under /v1, "
            'Prometheus metrics at /metrics. Every error answers `{"error": message}`. '
            "A path answers 405 to a method it does not list, and a path not listed 404."
        ),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},  # the validator badge is an outside call
    )
    app.state.modelloop = state
    _install_errors(app, state)
    from modelloop.serving._openapi import install_openapi
    from modelloop.serving._routes import add_routes

    add_routes(app, state)
    install_openapi(app, auth=bool(config.tokens) or config.users is not None)
    if config.tokens or config.users is not None:
        from modelloop.serving._auth import BearerAuthMiddleware

        app.add_middleware(
            BearerAuthMiddleware, tokens=list(config.tokens), users=config.users, served=names
        )
    else:
        from modelloop.serving._auth import OpenModeGuard

        app.add_middleware(OpenModeGuard)
    return app


async def _load(state: _State) -> None:
    """Load everything, then turn ready; a failure is logged, kept and reported to the runner."""
    try:
        await _startup(state)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        state.startup_error = e
        state.manager.failed = str(e)
        state.manager.loading.clear()
        log.error("startup failed: %s", e)
        if state.on_fatal is not None:
            state.on_fatal()
        return
    if state.config.reload_interval_s > 0:
        state.watcher = asyncio.get_running_loop().create_task(
            state.manager.watch(state.config.reload_interval_s)
        )


async def _startup(state: _State) -> None:
    t0 = time.perf_counter()
    config = state.config
    from modelloop._logroot import sink_for

    state.sink = sink = sink_for(state.client.settings.home)
    if sink is not None:
        metrics = state.metrics
        sink.on_state = metrics.log_spool
        sink.on_dropped = metrics.log_spool_dropped
        sink.on_upload_error = metrics.log_upload_error
        metrics.log_spool_bounds(sink.max_spool_bytes)
        metrics.log_spool(sink.spool_bytes, sink.spool_segments)
        log.info("logs go to %s (spool %s)", sink.root.describe(), sink.spool)
    if config.log_predictions:
        from modelloop.serving._predlog import PredictionLog

        state.log = PredictionLog(
            Path(state.client.settings.home),
            sink=sink,
            max_rows=config.log_max_rows,
            max_delay_s=config.log_max_delay_s,
            max_pending_rows=config.log_max_pending_rows,
            max_pending_bytes=config.log_max_pending_bytes,
            metrics=state.metrics,
        )
        state.log.start()
    if config.ops_interval_s > 0:
        from modelloop.aiops._history import OpsRecorder

        state.metrics.ops = OpsRecorder(
            Path(state.client.settings.home), interval_s=config.ops_interval_s
        )
    for spec in state.specs:
        await state.manager.add(spec)
    for name, challenger, share in config.canary:
        await state.manager.set_routing(name, challenger=challenger, mode="canary", share=share)
    for name, challenger in config.shadow:
        await state.manager.set_routing(name, challenger=challenger, mode="shadow")
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which would otherwise walk it every time and stall requests.
    # No full collection first: after imports and a model load it frees a few dozen objects
    # and takes 0.1-0.2 s of the start.
    gc.freeze()
    if state.ops is not None:
        for name in state.manager.endpoints:
            state.ops.add_model(name)
        state.ops.start()
    state.set_ready(True)
    from modelloop.serving._server import process_age_s

    log.info(
        "ready: %s loaded in %.2f s, %.2f s after the process started",
        ", ".join(f"{e.name}/{e.champion.version}" for e in state.manager.endpoints.values()),
        time.perf_counter() - t0,
        process_age_s(),
    )


def _install_errors(app: FastAPI, state: _State) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def modelloop_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ModelloopError)
        headers = None
        if isinstance(exc, Overloaded):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    app.add_exception_handler(ModelloopError, modelloop_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
