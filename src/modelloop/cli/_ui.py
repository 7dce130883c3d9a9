"""``modelloop ui``: the web dashboard over the embedded store, for one person on this machine."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from modelloop.exceptions import InvalidInput

__all__ = ["check_loopback", "ui_command"]


def check_loopback(host: str) -> str:
    """``host`` when it is a loopback address (or ``localhost``); ``InvalidInput`` otherwise:
    the dashboard has no login, so it must not be reachable from other machines."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidInput(
            f"--host {host!r} is not an IP address; modelloop ui binds to loopback only "
            "(127.0.0.1, ::1 or localhost)"
        ) from None
    if not address.is_loopback:
        raise InvalidInput(
            f"--host {host} is not a loopback address: modelloop ui has no login, so it "
            "serves this machine only (use 127.0.0.1 or ::1; a shared dashboard belongs behind "
            "`modelloop server`)"
        )
    return host


def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port to bind.", min=0, max=65535)] = 8500,
    host: Annotated[
        str, typer.Option("--host", help="Loopback address to bind (127.0.0.1 or ::1).")
    ] = "127.0.0.1",
) -> None:
    """Serve the web dashboard (experiments, runs, compare, models) on this machine only."""
    host = check_loopback(host)
    from modelloop.cli._output import cli_client, err_console, require_extra

    require_extra("ui", "starlette", "jinja2", "uvicorn", "plotly")
    import uvicorn

    from modelloop.ui import create_app

    client = cli_client(writes=True)
    try:
        app = create_app(client)
        shown = f"[{host}]" if ":" in host else host
        err_console.print(f"modelloop ui at http://{shown}:{port}/ (Ctrl+C stops it)")
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        client.close()
