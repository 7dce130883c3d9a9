"""The dashboard's ASGI app: routes, templates, static files and error pages."""

from __future__ import annotations

import datetime as _dt
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import ModelloopError

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from modelloop._client import Client

__all__ = ["client_of", "create_app", "render"]

_HERE = Path(__file__).parent

#: Only our own scripts run; plotly.js sets inline styles, so styles may be inline.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    moment = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every value is text unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["number"] = _number
    from modelloop.ui import _actions, _auth

    env.globals["principal"] = _auth.principal
    env.globals["may_retrain"] = _actions.may_retrain
    env.globals["csrf_token"] = _auth.csrf_token
    env.globals["login_required"] = _auth.login_required
    env.globals["may"] = _may
    return env


def _may(request: Request, role: str, model: str | None = None) -> bool:
    """Whether the request's principal has ``role`` (on ``model``): templates show write
    controls only then (the server checks again on every write)."""
    from modelloop.access import Role
    from modelloop.ui._auth import principal

    who = principal(request)
    return who is not None and who.may(Role.parse(role), model)


def client_of(request: Request) -> Client:
    """The client the app was created over (:func:`create_app`)."""
    client: Client = request.app.state.client
    return client


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page from ``templates/`` with ``request`` in its context."""
    from starlette.responses import HTMLResponse

    html = _environment().get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code)


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelloopError)
    return render(
        request,
        "error.html",
        {"title": type(exc).__name__, "message": str(exc)},
        status_code=exc.http_status if exc.http_status >= 400 else 500,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = int(getattr(exc, "status_code", 500))
    message = "no such page" if status == 404 else str(getattr(exc, "detail", "error"))
    return render(request, "error.html", {"title": f"HTTP {status}", "message": message}, status)


@functools.lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs()).encode()


async def _plotly(request: Request) -> Response:
    """plotly.js from the installed plotly package (no CDN)."""
    from starlette.responses import Response

    return Response(
        _plotly_js(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def create_app(client: Client, *, login: bool = False) -> Starlette:
    """The dashboard over ``client``'s store and artifacts, as an ASGI app.

    ``login=False`` (``modelloop ui``): one person on this machine, acting as the local user
    with role admin, on loopback host names only. ``login=True`` (mounted by ``modelloop
    server``; the store must be a ``SqlStore``): once the store has users, every page needs a
    session opened by logging in with an API token, and writes need the user's role. Every POST
    carries a CSRF token either way (see :mod:`modelloop.ui._auth`).
    """
    import secrets

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from modelloop.access import Role
    from modelloop.access._principal import OPEN_MODE_PRINCIPAL, Principal
    from modelloop.ui import _actions, _audit, _auth, _loop, _models, _monitoring, _runs

    routes = [
        Route("/", _runs.experiments_page, name="experiments"),
        Route("/experiments/{experiment_id:int}", _runs.runs_page, name="runs"),
        Route("/runs/{run_id}", _runs.run_page, name="run"),
        Route("/runs/{run_id}/artifacts/{path:path}", _runs.artifact_download, name="artifact"),
        Route("/api/runs/{run_id}/metric", _runs.metric_series, name="metric_series"),
        Route("/api/metric", _runs.metric_series_many, name="metric_series_many"),
        Route("/compare", _runs.compare_page, name="compare"),
        Route("/models", _models.models_page, name="models"),
        Route("/models/{name}", _models.model_page, name="model"),
        Route("/models/{name}/monitoring", _monitoring.monitoring_page, name="monitoring"),
        Route("/models/{name}/loop", _loop.loop_page, name="loop"),
        Route("/login", _auth.login_page, name="login"),
        Route("/login", _auth.login_submit, methods=["POST"], name="login_submit"),
        Route("/logout", _auth.logout, methods=["POST"], name="logout"),
        *_actions.routes(),
        Route("/audit", _audit.audit_page, name="audit"),
        Route("/static/plotly.min.js", _plotly, name="plotly"),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ModelloopError: _error_page, HTTPException: _http_error},
        middleware=[Middleware(_SecurityHeaders), Middleware(_auth.AuthGate)],
    )
    app.state.client = client
    app.state.sessions = None
    if login:
        app.state.sessions = _auth.Sessions(client.store)
        app.state.sessions.create_table()
        app.state.local_principal = OPEN_MODE_PRINCIPAL
    else:
        app.state.local_principal = Principal(client.settings.user or "local", Role.ADMIN, None)
    app.state.local_csrf = secrets.token_urlsafe(32)
    return app


class _SecurityHeaders:
    """Content-Security-Policy and friends on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", _CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    # same-origin, not no-referrer: with no-referrer a browser sends
                    # "Origin: null" on form posts, and the dashboard checks Origin on writes
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
