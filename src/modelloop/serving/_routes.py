"""The server's routes. Every handler reads the raw body itself: content type and size are
checked before anything is parsed, and only JSON is ever parsed."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.requests import Request

from modelloop._names import PREDICTION_COLUMNS
from modelloop.exceptions import ModelloopError, NotFound, SchemaMismatch, StoreError
from modelloop.serving._errors import BadRequest, Overloaded, PayloadTooLarge
from modelloop.serving._http import inline_binary_tensors, json_header_length, read_body
from modelloop.serving._openapi import V2_REQUEST_BODY

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelloop.serving._app import _State
    from modelloop.serving._batcher import BatchResult
    from modelloop.serving._routing import LoadedModel

__all__ = ["add_routes"]

log = logging.getLogger("modelloop.serving")


class _DirectRoute(APIRoute):
    """A route whose endpoint is called as ``endpoint(request, **path_params)`` and returns a
    ready :class:`Response`. FastAPI's per-request parameter solving and response serialization
    are skipped — together they cost about as much as a single-row prediction — while routing,
    exception handlers, middleware and the OpenAPI document work as for any route; route
    dependencies are refused, since they would not run. Used for the prediction routes, whose
    handlers read the raw body themselves anyway."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if self.dependant.dependencies:  # they would be skipped silently
            raise TypeError(f"{self.path}: a direct route cannot have dependencies")
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handler


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json(content: dict[str, Any]) -> Response:
    """A compact JSON answer (the encoders have already turned non-finite floats into null)."""
    return Response(_ENCODER.encode(content).encode(), media_type="application/json")


#: The V2 protocol extensions this server implements.
_V2_EXTENSIONS = ["binary_tensor_data"]

_RECORDS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "Rows as records, or as columns; give one of the two.",
                "properties": {
                    "records": {
                        "type": "array",
                        "items": {"type": "object", "additionalProperties": True},
                        "example": [{"feature_a": 1.5, "feature_b": "x"}],
                    },
                    "columns": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {}},
                        "example": {"feature_a": [1.5, 2.0], "feature_b": ["x", "y"]},
                    },
                    "id": {"type": "string", "description": "Your request id (else one is made)"},
                    "key": {"type": "string", "description": "Sticky canary routing key"},
                },
            }
        }
    },
}
_FEEDBACK_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "request_id": {"type": "string"},
                    "label": {},
                    "labels": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"request_id": {"type": "string"}, "label": {}},
                        },
                    },
                },
            }
        }
    },
}
_ROUTING_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "challenger": {
                        "description": "@alias, a version number, NAME@ALIAS or NAME/VERSION; "
                        "null keeps the current challenger",
                    },
                    "mode": {"type": "string", "enum": ["off", "canary", "shadow"]},
                    "share": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["mode"],
            }
        }
    },
}


def _key(payload: dict[str, Any], v2: bool) -> str | None:
    if v2:
        params = payload.get("parameters")
        value = params.get("key") if isinstance(params, dict) else None
    else:
        value = payload.get("key")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"the routing key must be a string, got {type(value).__name__}")
    return str(value)


def add_routes(app: FastAPI, state: _State) -> None:
    from modelloop import __version__
    from modelloop.serving import _codec, _encode

    config = state.config
    metrics = state.metrics

    def get(path: str, **kwargs: Any) -> Callable[[Any], Any]:
        """GET, and HEAD for probes (left out of the OpenAPI document: one operation per path)."""

        def register(endpoint: Any) -> Any:
            app.add_api_route(path, endpoint, methods=["GET"], **kwargs)
            app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False, **kwargs)
            return endpoint

        return register

    shadows: set[asyncio.Task[None]] = set()

    def row_ids(rid: str, n: int) -> list[str]:
        return [rid] if n == 1 else [f"{rid}/{i}" for i in range(n)]

    def log_rows(
        model: LoadedModel, route: str, rid: str, decoded: Any, result: BatchResult, ms: float
    ) -> None:
        """Queue a request's rows for the prediction log; never fails the request."""
        if state.log is None:
            return
        try:
            queue_rows(model, route, rid, decoded, result, ms)
        except Exception:
            log.exception("prediction log: could not queue a request of %s", model.name)

    def count_unseen(model: LoadedModel, decoded: Any) -> None:
        """Count values served although outside their column's categories (unseen="accept")."""
        for column, n in _codec.unseen_counts(decoded.columns, model.signature).items():
            metrics.unseen_category(model.name, str(model.version), column, n)

    def queue_rows(
        model: LoadedModel, route: str, rid: str, decoded: Any, result: BatchResult, ms: float
    ) -> None:
        n = decoded.n_rows
        has_proba = result.proba is not None and model.classes is not None
        if n == 1:  # the common case: one plain tuple, cheap to keep and to write
            names = model.log_names
            if names is None:
                names = (
                    *PREDICTION_COLUMNS, *model.signature.columns, "prediction",
                    *(f"proba_{c}" for c in (model.classes or []) if has_proba),
                    "latency_ms",
                )  # fmt: skip
                model.log_names = names
            row = (
                rid, time.time(), model.name, model.version, route,
                *(decoded.columns[c][0] for c in model.signature.columns),
                result.prediction[:1].tolist()[0],
                *(result.proba[0].tolist() if has_proba else ()),
                ms,
            )  # fmt: skip
            if len(row) == len(names):
                state.log.append_row(model.name, names, row)
                return
        cols: dict[str, Any] = {
            "request_id": row_ids(rid, n),
            "timestamp": [time.time()] * n,
            "model_name": [model.name] * n,
            "model_version": [model.version] * n,
            "route": [route] * n,
        }
        cols.update(decoded.columns)
        cols["prediction"] = result.prediction.tolist()
        if has_proba:
            for j, c in enumerate(model.classes or []):
                cols[f"proba_{c}"] = result.proba[:, j].tolist()
        cols["latency_ms"] = [ms] * n
        state.log.append(model.name, cols)

    async def shadow_copy(
        model: LoadedModel, payload: dict[str, Any], v2: bool, rid: str, served: tuple[Any, Any]
    ) -> None:
        """Predict and log a copy for ``model``; ``served`` is (signature, decoded request) of
        the answer given, reused when the shadow takes the same inputs."""
        t0 = time.perf_counter()
        status = 200
        try:
            signature, decoded = served
            if model.signature != signature:  # decode again only if the inputs differ
                decode = _codec.decode_v2 if v2 else _codec.decode_records
                decoded = decode(
                    payload,
                    model.signature,
                    max_rows=config.max_rows,
                    max_string_length=config.max_string_length,
                )
            result = await model.batcher.submit(decoded.columns, decoded.n_rows)
            count_unseen(model, decoded)
            log_rows(model, "shadow", rid, decoded, result, (time.perf_counter() - t0) * 1e3)
        except ModelloopError as e:
            status = e.http_status
            if isinstance(e, Overloaded):
                metrics.rejected(model.name, "shadow_queue_full")
        except Exception:  # a shadow never affects the caller
            status = 500
        metrics.request(model.name, str(model.version), "shadow", status, time.perf_counter() - t0)

    async def predict(
        request: Request, name: str, v2: bool, version: str | None
    ) -> tuple[LoadedModel, str, Any, str, BatchResult]:
        """Read, route, validate and predict one request; a failure is counted, then raised."""
        t0 = time.perf_counter()
        picked: dict[str, Any] = {}
        try:
            return await predict_counted(request, name, v2, version, picked, t0)
        except Exception as e:
            failed(picked, e, t0)
            raise

    async def predict_counted(
        request: Request,
        name: str,
        v2: bool,
        version: str | None,
        picked: dict[str, Any],
        t0: float,
    ) -> tuple[LoadedModel, str, Any, str, BatchResult]:
        endpoint = state.manager.get(name)
        picked["model"] = name
        binary_at = json_header_length(request) if v2 else None
        body = await read_body(request, config.max_body_bytes, allow_binary=binary_at is not None)
        if binary_at is not None:
            if binary_at > len(body):
                raise BadRequest("Inference-Header-Content-Length is longer than the body")
            payload = require_object(_codec.parse_json(body[:binary_at]), "the request")
            inline_binary_tensors(payload, body[binary_at:])
        else:
            payload = require_object(_codec.parse_json(body), "the request")
        if version is None:
            model, route, shadow = endpoint.pick(_key(payload, v2))
        else:
            model, route = endpoint.by_version(_version(name, version))
            shadow = None
        picked["version"], picked["route"] = str(model.version), route
        decode = _codec.decode_v2 if v2 else _codec.decode_records
        decoded = decode(
            payload,
            model.signature,
            max_rows=config.max_rows,
            max_string_length=config.max_string_length,
        )
        rid = decoded.request_id or state.served.new_id()
        ops = metrics.ops
        if ops is not None and ops.fault_delay_s:  # an injected fault (drills)
            await asyncio.sleep(ops.fault_delay_s)
        try:
            result = await model.batcher.submit(decoded.columns, decoded.n_rows)
        except Overloaded:
            metrics.rejected(name, "queue_full")
            raise
        if shadow is not None:
            task = asyncio.get_running_loop().create_task(
                shadow_copy(shadow, payload, v2, rid, (model.signature, decoded))
            )
            shadows.add(task)
            task.add_done_callback(shadows.discard)
        seconds = time.perf_counter() - t0
        state.served.record(name, rid, decoded.n_rows)
        count_unseen(model, decoded)
        log_rows(model, route, rid, decoded, result, seconds * 1e3)
        metrics.request(name, str(model.version), route, 200, seconds)
        return model, route, decoded, rid, result

    def failed(picked: dict[str, Any], exc: BaseException, t0: float) -> None:
        """Count a failed request under the model it was for, if that model is served here
        (names from unknown URLs never become label values)."""
        name = picked.get("model", "")
        if isinstance(exc, PayloadTooLarge) and name:
            metrics.rejected(name, "too_large")
        status = exc.http_status if isinstance(exc, ModelloopError) else 500
        if status >= 500 and not isinstance(exc, Overloaded):
            log.warning("%s: %s", name or "request", exc)
        metrics.request(
            name,
            picked.get("version", ""),
            picked.get("route", ""),
            status,
            time.perf_counter() - t0,
        )

    # -- Open Inference Protocol V2 ----------------------------------------------------------

    @get("/v2", tags=["v2"], summary="Server metadata")
    async def v2_server() -> dict[str, Any]:
        return {"name": "modelloop", "version": __version__, "extensions": _V2_EXTENSIONS}

    @get("/v2/health/live", tags=["v2"], summary="Liveness")
    async def v2_live() -> Response:
        if state.startup_error is not None:  # a supervisor should restart or report it
            return JSONResponse(
                {"live": False, "error": f"startup failed: {state.startup_error}"},
                status_code=500,
            )
        return JSONResponse({"live": True})

    @get("/v2/health/ready", tags=["v2"], summary="Readiness: 200 once models are loaded")
    async def v2_ready() -> Response:
        ok = state.ready and not state.draining
        answer: dict[str, Any] = {"ready": ok}
        refused = [
            {"model": e.name, "route": role, **info}
            for e in state.manager.endpoints.values()
            for role, info in e.refused.items()
        ]
        if refused:  # still ready: the previous versions answer (see the README)
            answer["refused"] = refused
        sink = state.sink
        if sink is not None and (sink.spool_segments or sink.dropped_rows):
            # still ready: rows are kept in the spool (or, past its bound, dropped and counted)
            answer["log_spool"] = {
                "root": sink.root.describe(),
                "error": sink.last_error,
                "spool_bytes": sink.spool_bytes,
                "spool_max_bytes": sink.max_spool_bytes,
                "spool_segments": sink.spool_segments,
                "dropped_rows": sink.dropped_rows,
            }
        return JSONResponse(answer, status_code=200 if ok else 400)

    def metadata(name: str, version: str | None) -> dict[str, Any]:
        endpoint = state.manager.get(name)
        if version is None:
            model = endpoint.champion
        else:
            model, _ = endpoint.by_version(_version(name, version))
        versions = [str(v) for v in endpoint.versions()] if version is None else [version]
        return _encode.v2_model_metadata(name, versions, model.signature)

    @get("/v2/models/{name}", tags=["v2"], summary="Model metadata")
    async def v2_model(name: str) -> dict[str, Any]:
        return metadata(name, None)

    @get("/v2/models/{name}/versions/{version}", tags=["v2"], summary="Version metadata")
    async def v2_model_version(name: str, version: str) -> dict[str, Any]:
        return metadata(name, version)

    def model_ready(name: str, version: str | None) -> Response:
        refused = state.manager.get(name).refused if name in state.manager.endpoints else {}
        if version is not None:
            for role, info in refused.items():
                if str(info["version"]) == version:  # named by an alias, but not loadable
                    return JSONResponse(
                        {"name": name, "ready": False, "refused": {"route": role, **info}},
                        status_code=400,
                    )
        metadata(name, version)  # 404 when not served
        ok = state.ready
        answer: dict[str, Any] = {"name": name, "ready": ok}
        if version is None and refused:  # still ready: the previous version answers
            answer["refused"] = {role: info for role, info in refused.items()}
        return JSONResponse(answer, status_code=200 if ok else 400)

    @get("/v2/models/{name}/ready", tags=["v2"], summary="Model readiness")
    async def v2_model_ready(name: str) -> Response:
        return model_ready(name, None)

    @get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], summary="Version ready")
    async def v2_version_ready(name: str, version: str) -> Response:
        return model_ready(name, version)

    async def v2_infer_any(request: Request, name: str, version: str | None) -> Response:
        model, _route, decoded, rid, result = await predict(request, name, True, version)
        answer = _encode.encode_v2(
            name,
            str(model.version),
            rid,
            result.prediction,
            result.proba,
            model.signature,
            decoded.outputs,
        )
        if not decoded.binary_outputs:
            return _json(answer)
        blob = _encode.binary_outputs(answer, decoded.binary_outputs)
        header = _ENCODER.encode(answer).encode()
        return Response(
            header + blob,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

    direct = functools.partial(
        app.router.add_api_route,
        methods=["POST"],
        route_class_override=_DirectRoute,
        response_model=dict[str, Any],  # for the OpenAPI document only: the handler encodes
    )

    async def v2_infer(request: Request, name: str) -> Response:
        return await v2_infer_any(request, name, None)

    v2_body = {"requestBody": V2_REQUEST_BODY}
    direct(
        "/v2/models/{name}/infer",
        v2_infer,
        tags=["v2"],
        summary="Inference (V2 tensors)",
        openapi_extra=v2_body,
    )

    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        return await v2_infer_any(request, name, version)

    direct(
        "/v2/models/{name}/versions/{version}/infer",
        v2_infer_version,
        tags=["v2"],
        summary="Inference, one version",
        openapi_extra=v2_body,
    )

    # -- plain JSON ---------------------------------------------------------------------------

    async def v1_predict(request: Request, name: str) -> Response:
        model, route, decoded, rid, result = await predict(request, name, False, None)
        out = _encode.encode_records(
            name, model.version, rid, route, result.prediction, result.proba, model.classes
        )
        if decoded.n_rows > 1:
            out["row_ids"] = row_ids(rid, decoded.n_rows)
        return _json(out)

    direct(
        "/v1/models/{name}/predict",
        v1_predict,
        tags=["v1"],
        summary="Predict rows given as records or columns",
        openapi_extra={"requestBody": _RECORDS_BODY},
    )

    @app.post(
        "/v1/models/{name}/feedback",
        tags=["v1"],
        summary="Record ground-truth labels by request id",
        openapi_extra={"requestBody": _FEEDBACK_BODY},
    )
    async def v1_feedback(request: Request, name: str) -> dict[str, Any]:
        endpoint = state.manager.get(name)
        body = await read_body(request, config.max_body_bytes, require_type=True)
        payload = require_object(_codec.parse_json(body), "the feedback")
        rows = _feedback_rows(payload, config.max_rows, config.max_string_length)
        classes = {
            repr(c)
            for m in (endpoint.champion, endpoint.challenger)
            if m is not None and m.classes is not None
            for c in m.classes
        }
        for i, (_rid, label) in enumerate(rows):
            if classes and repr(label) not in classes:
                raise SchemaMismatch(
                    f"{_where(payload, i)}.label: {label!r} is not a class of model {name!r} "
                    f"(classes: {sorted(classes)})",
                    column="label",
                )
        check = state.served.check(name, (rid for rid, _ in rows))
        if check.never:
            metrics.feedback(name, "refused", len(rows))
            shown = check.never[:10]
            more = f" and {len(check.never) - 10} more" if len(check.never) > 10 else ""
            raise SchemaMismatch(
                f"no label was recorded: model {name!r} never answered request ids {shown}"
                f"{more}; label the request_id of an answer (the row_ids of a multi-row one)",
                column="request_id",
            )
        try:
            await asyncio.to_thread(_write_feedback, state, name, rows)
        except OSError as e:
            raise StoreError(f"could not record the feedback: {e}") from e
        metrics.feedback(name, "verified", check.verified)
        metrics.feedback(name, "unverified", check.unverified)
        return {
            "model_name": name,
            "accepted": len(rows),
            "verified": check.verified,
            "unverified": check.unverified,
        }

    @get("/v1/models", tags=["v1"], summary="Served models and their routing")
    async def v1_models() -> dict[str, Any]:
        return {"models": [e.describe() for e in state.manager.endpoints.values()]}

    @get("/v1/models/{name}", tags=["v1"], summary="One served model and its routing")
    async def v1_model(name: str) -> dict[str, Any]:
        return state.manager.get(name).describe()

    # -- admin --------------------------------------------------------------------------------

    @get("/v1/admin/routing", tags=["admin"], summary="Routing of every model")
    async def admin_routing() -> dict[str, Any]:
        return await v1_models()

    @app.put(
        "/v1/admin/models/{name}/routing",
        tags=["admin"],
        summary="Set a model's challenger and its mode (canary share or shadow)",
        openapi_extra={"requestBody": _ROUTING_BODY},
    )
    async def admin_set_routing(request: Request, name: str) -> dict[str, Any]:
        state.manager.get(name)
        body = await read_body(request, config.max_body_bytes, require_type=True)
        payload = require_object(_codec.parse_json(body), "the routing")
        unknown = sorted(set(payload) - {"challenger", "mode", "share"})
        if unknown:
            raise BadRequest(f"unknown routing fields {unknown}; use challenger, mode, share")
        if "mode" not in payload:
            raise BadRequest("routing needs 'mode': off, canary or shadow")
        share = payload.get("share", 0.0)
        if (
            isinstance(share, bool)
            or not isinstance(share, int | float)
            or not math.isfinite(share)
        ):
            raise BadRequest(f"share must be a number between 0 and 1, got {share!r}")
        endpoint = await state.manager.set_routing(
            name, challenger=payload.get("challenger"), mode=payload["mode"], share=share
        )
        return endpoint.describe()

    @app.post("/v1/admin/reload", tags=["admin"], summary="Follow alias moves now")
    async def admin_reload() -> dict[str, Any]:
        return {"changed": await state.manager.refresh()}

    # -- metrics ------------------------------------------------------------------------------

    @get("/metrics", tags=["metrics"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        if state.log is not None:
            metrics.log_state(
                state.log.pending_rows, state.log.lag_seconds, state.log.pending_bytes
            )
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    # Routes are matched in order: the two prediction routes go first.
    hot = {"/v1/models/{name}/predict", "/v2/models/{name}/infer"}
    app.router.routes.sort(key=lambda r: getattr(r, "path", "") not in hot)


def require_object(payload: Any, what: str) -> dict[str, Any]:
    """``payload`` if it is a JSON object, else ``BadRequest`` naming ``what``."""
    if not isinstance(payload, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(payload).__name__}")
    return payload


_VERSION = re.compile(r"[0-9]{1,18}")


def _version(name: str, text: str) -> int:
    """A version number from a URL (ASCII digits only), or NotFound."""
    if not _VERSION.fullmatch(text) or int(text) < 1:
        raise NotFound(f"model {name!r} has no version {text[:40]!r}")
    return int(text)


def _where(payload: dict[str, Any], i: int) -> str:
    return f"labels[{i}]" if "labels" in payload else "feedback"


def _feedback_rows(
    payload: dict[str, Any], max_rows: int, max_string_length: int
) -> list[tuple[str, Any]]:
    if "labels" in payload:
        items = payload["labels"]
        if not isinstance(items, list) or not items:
            raise BadRequest("'labels' must be a non-empty list of {request_id, label}")
        unknown = sorted(set(payload) - {"labels"})
    else:
        items = [payload]
        unknown = []
    if unknown:
        raise BadRequest(f"unknown feedback fields {unknown}")
    if len(items) > max_rows:
        raise PayloadTooLarge(f"{len(items)} labels in one request; the limit is {max_rows}")
    rows: list[tuple[str, Any]] = []
    kinds: set[type] = set()
    for i, item in enumerate(items):
        where = _where(payload, i)
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object")
        extra = sorted(set(item) - {"request_id", "label"})
        if extra:
            raise BadRequest(f"{where}: unknown fields {extra}")
        rid, label = item.get("request_id"), item.get("label")
        if not isinstance(rid, str) or not rid or len(rid) > 200:
            raise SchemaMismatch(
                f"{where}.request_id must be a non-empty string", column="request_id"
            )
        if isinstance(label, float) and not math.isfinite(label):
            raise SchemaMismatch(f"{where}.label must be finite", column="label")
        if label is None or not isinstance(label, str | int | float | bool):
            raise SchemaMismatch(
                f"{where}.label must be a string, number or boolean, got {label!r}", column="label"
            )
        if isinstance(label, str) and len(label) > max_string_length:
            raise SchemaMismatch(
                f"{where}.label is a string of {len(label)} characters; the limit is "
                f"{max_string_length} (modelloop serve --max-string-length)",
                column="label",
            )
        kinds.add(float if type(label) is int else type(label))
        rows.append((rid, label))
    if len(kinds) > 1:
        raise SchemaMismatch("all labels in one request must have the same type", column="label")
    return rows


def _write_feedback(state: _State, name: str, rows: list[tuple[str, Any]]) -> None:
    import pandas as pd

    from modelloop.monitoring._logfiles import append_feedback

    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame(
        {
            "request_id": [r for r, _ in rows],
            "label": [lbl for _, lbl in rows],
            "timestamp": [now] * len(rows),
        }
    )
    append_feedback(state.client.settings.home, name, frame)
