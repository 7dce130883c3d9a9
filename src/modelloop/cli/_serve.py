"""``modelloop serve``: registry models over Open Inference Protocol V2 and plain JSON."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from modelloop.exceptions import InvalidInput

_CANARY = re.compile(r"^(?P<spec>[^:]+):(?P<share>[0-9.]+)$")


def _model_name(spec: str) -> str:
    from modelloop.registry._uri import parse_model_spec

    return parse_model_spec(spec).name


def _canaries(values: list[str]) -> tuple[tuple[str, str, float], ...]:
    out = []
    for value in values:
        m = _CANARY.match(value)
        if not m:
            raise InvalidInput(
                f"bad --canary {value!r}: use NAME@ALIAS:SHARE, e.g. fraud@challenger:0.1"
            )
        try:
            share = float(m["share"])
        except ValueError:
            raise InvalidInput(f"bad --canary share in {value!r}") from None
        if not 0 <= share <= 1:
            raise InvalidInput(f"--canary share must be between 0 and 1, got {share}")
        out.append((_model_name(m["spec"]), m["spec"], share))
    return tuple(out)


def serve_command(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Models to serve: NAME, NAME@ALIAS or NAME/VERSION (aliases are "
            "followed: when one moves, the new version is loaded and switched in)."
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.", min=0, max=65535)] = 8080,
    token: Annotated[
        list[str] | None,
        typer.Option(
            "--token",
            help="Bearer token (TOKEN or TOKEN:predict); repeatable. Also "
            "MODELLOOP_SERVE_TOKENS (comma-separated).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File of tokens, one per line.")
    ] = None,
    users: Annotated[
        bool | None,
        typer.Option(
            "--users/--no-users",
            help="Also accept the tokens of the store's users (modelloop tokens create): "
            "viewers and editors may predict, deployers and admins also call the admin routes. "
            "Default: on when the store has users.",
            show_default=False,
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Serve without tokens on a non-loopback address (not recommended).",
        ),
    ] = False,
    canary: Annotated[
        list[str] | None,
        typer.Option("--canary", help="Challenger taking a share of traffic: NAME@ALIAS:SHARE."),
    ] = None,
    shadow: Annotated[
        list[str] | None,
        typer.Option("--shadow", help="Challenger getting a logged copy of traffic: NAME@ALIAS."),
    ] = None,
    max_batch_rows: Annotated[
        int, typer.Option("--max-batch-rows", min=1, help="Largest micro-batch, in rows.")
    ] = 64,
    max_batch_delay_ms: Annotated[
        float,
        typer.Option("--max-batch-delay-ms", min=0, max=1000, help="Longest wait to fill a batch."),
    ] = 2.0,
    no_batching: Annotated[
        bool, typer.Option("--no-batching", help="Predict every request on its own.")
    ] = False,
    max_queue_rows: Annotated[
        int, typer.Option("--max-queue-rows", min=1, help="Rows waiting before 503.")
    ] = 2048,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body (413 above).")
    ] = 4 * 1024 * 1024,
    max_rows: Annotated[
        int, typer.Option("--max-rows", min=1, help="Most rows in one request (413 above).")
    ] = 10_000,
    max_string_length: Annotated[
        int,
        typer.Option(
            "--max-string-length",
            min=1,
            help="Longest string value in an input column or a label, in characters (422 above).",
        ),
    ] = 65_536,
    onnx: Annotated[
        bool | None,
        typer.Option(
            "--onnx/--no-onnx",
            help="By default a version with a registered ONNX form (modelloop models convert) "
            "is predicted by onnxruntime, any other by its tree form or scikit-learn. --onnx "
            "also converts versions with neither form here (kept under the home for the next "
            "start) where they "
            "match scikit-learn on their input example; --no-onnx never uses ONNX.",
            show_default=False,
        ),
    ] = None,
    tree_form: Annotated[
        bool,
        typer.Option(
            "--tree-form/--no-tree-form",
            help="Predict a HistGradientBoosting package by its tree form (its trees as "
            "arrays, checked against scikit-learn when it was saved) with NumPy, without "
            "loading scikit-learn: the server is ready sooner. --no-tree-form loads the model.",
        ),
    ] = True,
    no_log: Annotated[
        bool, typer.Option("--no-log", help="Do not write the prediction log.")
    ] = False,
    log_max_pending_bytes: Annotated[
        int,
        typer.Option(
            "--log-max-pending-bytes",
            min=1,
            help="Memory the prediction log may hold while it cannot write (estimated); rows "
            "past it are dropped and counted.",
        ),
    ] = 256 * 1024 * 1024,
    reload_interval: Annotated[
        float,
        typer.Option("--reload-interval", min=0, help="Seconds between alias checks (0: never)."),
    ] = 5.0,
    ops_interval: Annotated[
        float,
        typer.Option(
            "--ops-interval",
            min=0,
            help="Seconds per row of the operational history (requests, errors, latency, "
            "queue, CPU, RSS per model under $MODELLOOP_HOME/ops; 0: not recorded).",
        ),
    ] = 10.0,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds in-flight requests get on SIGTERM.")
    ] = 30.0,
    drain_delay: Annotated[
        float,
        typer.Option(
            "--drain-delay",
            min=0,
            help="Seconds to keep answering after SIGTERM with readiness off, before closing.",
        ),
    ] = 0.0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve registry models over HTTP: Open Inference Protocol V2 under /v2, plain JSON under
    /v1 (docs at /docs), Prometheus metrics at /metrics."""
    import logging

    from modelloop.cli._output import require_extra, tell_store

    require_extra("serve", "fastapi", "uvicorn", "prometheus_client")
    if onnx:
        require_extra("onnx", "skl2onnx", "onnxruntime")
    from modelloop._config import Settings
    from modelloop.serving._app import ServeConfig
    from modelloop.serving._auth import load_tokens
    from modelloop.serving._server import serve

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(message)s")
    tokens = load_tokens(tokens=token or (), token_file=token_file)
    config = ServeConfig(
        max_batch_rows=max_batch_rows,
        max_batch_delay_ms=max_batch_delay_ms,
        batching=not no_batching,
        max_queue_rows=max_queue_rows,
        max_body_bytes=max_body_bytes,
        max_rows=max_rows,
        max_string_length=max_string_length,
        onnx=onnx,
        tree_form=tree_form,
        log_predictions=not no_log,
        log_max_pending_bytes=log_max_pending_bytes,
        reload_interval_s=reload_interval,
        ops_interval_s=ops_interval,
        grace_s=grace,
        tokens=tuple(tokens),
        canary=_canaries(canary or []),
        shadow=tuple((_model_name(s), s) for s in shadow or []),
    )
    settings = Settings.from_env()
    tell_store(settings)
    from dataclasses import replace

    from modelloop.access._serve import user_check_for

    config = replace(config, users=user_check_for(settings.resolved_store_url, users))
    serve(
        models,
        host=host,
        port=port,
        config=config,
        settings=settings,
        allow_unauthenticated=allow_unauthenticated,
        drain_delay_s=drain_delay,
        log_level=log_level,
    )
