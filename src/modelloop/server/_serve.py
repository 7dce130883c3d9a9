"""Run the control-plane server: open the stores, check the bind is safe, start uvicorn."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from modelloop._config import Settings, is_server_url
from modelloop.exceptions import InvalidInput
from modelloop.serving._auth import is_loopback

__all__ = ["ServerOptions", "build_app", "is_loopback", "run_server"]


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    tls_cert: str | None = None
    tls_key: str | None = None
    max_upload_mb: int = 2048


def build_app(settings: Settings, options: ServerOptions) -> Any:
    """The app over the SQL store and artifact root ``settings`` name, after the bind checks."""
    from modelloop.artifacts import ArtifactStore, Keyring
    from modelloop.server._app import create_app
    from modelloop.store._sql import SqlStore

    url = settings.resolved_store_url
    if is_server_url(url):
        raise InvalidInput(
            "the server needs the database itself: set MODELLOOP_STORE_URL to a SQLite or "
            "PostgreSQL URL where the server runs, not to another server"
        )
    if (options.tls_cert is None) != (options.tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together: give both or neither")
    if options.max_upload_mb < 1:
        raise InvalidInput(f"--max-upload-mb must be at least 1, not {options.max_upload_mb}")
    store = SqlStore(url)
    if not is_loopback(options.host) and not store.has_users():
        store.close()
        raise InvalidInput(
            f"refusing to listen on {options.host}: the store has no users, so every "
            "request would be allowed. Create an admin first (modelloop users add NAME "
            "--role admin, then modelloop tokens create NAME), or bind 127.0.0.1"
        )
    # blobs are encrypted at rest when the server's settings hold a key
    artifacts = ArtifactStore(
        settings.resolved_artifact_root, keyring=Keyring.from_settings(settings)
    )
    return create_app(store, artifacts, settings, max_upload_bytes=options.max_upload_mb << 20)


def run_server(
    settings: Settings, options: ServerOptions, *, sock: socket.socket | None = None
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM end it gracefully)."""
    import uvicorn

    app = build_app(settings, options)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        app.state.store.close()
