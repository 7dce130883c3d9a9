"""``modelloop server``: the control-plane HTTP API over the store, registry and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def server_command(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to bind. Anything but loopback needs users in the store "
            "(modelloop users add).",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind.", min=0, max=65535)] = 8000,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) for HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key for HTTPS.")
    ] = None,
    max_upload_mb: Annotated[
        int, typer.Option("--max-upload-mb", min=1, help="Largest artifact blob accepted, in MB.")
    ] = 2048,
) -> None:
    """Serve the store, registry and artifacts over HTTP (clients then need only
    MODELLOOP_STORE_URL=http(s)://HOST:PORT and MODELLOOP_TOKEN)."""
    from modelloop._config import Settings
    from modelloop.cli._output import require_extra, tell_store
    from modelloop.server._serve import ServerOptions, run_server

    require_extra("server", "fastapi", "uvicorn")
    settings = Settings.from_env()
    tell_store(settings)

    options = ServerOptions(
        host=host,
        port=port,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
        max_upload_mb=max_upload_mb,
    )
    run_server(settings, options)
