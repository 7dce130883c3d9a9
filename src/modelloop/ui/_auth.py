"""Who is looking at the dashboard, and what a browser may send it.

Two modes (:func:`modelloop.ui.create_app`'s ``login``):

* ``modelloop ui`` (no login): one person on this machine owns the store; every request acts as
  the local user with role admin. A request must name a loopback host (no DNS rebinding).
* under ``modelloop server`` (login): while the store has no user the server is in open mode
  (loopback only) and so is the dashboard; from the first user on, every page needs a session.
  A user logs in by pasting an API token, checked by the store's ``authenticate`` like every API
  request; the server then keeps a session row (the SHA-256 of a random id, the user, the token
  it was opened with, a CSRF secret, an expiry) and the browser keeps only the random id in an
  HttpOnly, SameSite=Strict cookie (Secure over TLS). Every request re-checks that the session
  is unexpired, its user enabled and its token unrevoked. Logging out deletes the row.

Every POST must carry the CSRF token of its session (form field ``csrf`` or header
``X-CSRF-Token``) and must not come from another origin (``Sec-Fetch-Site``, ``Origin`` vs
``Host``); otherwise 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa

from modelloop.access import Role, parse_token
from modelloop.access._principal import OPEN_MODE_PRINCIPAL, Principal, principal_of
from modelloop.exceptions import NotFound

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "OPEN_MODE_PRINCIPAL",
    "AuthGate",
    "Session",
    "Sessions",
    "csrf_token",
    "login_page",
    "login_required",
    "login_submit",
    "logout",
    "principal",
    "read_form",
    "require",
]

COOKIE = "modelloop_session"
LOGIN_COOKIE = "modelloop_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_MS = 8 * 3600 * 1000
MAX_FORM_BYTES = 64 << 10
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = frozenset(("localhost", "127.0.0.1", "::1", "[::1]"))

_metadata = sa.MetaData()
_sessions = sa.Table(
    "modelloop_server_ui_sessions",
    _metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(200), nullable=False),
    sa.Column("token_id", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A live dashboard session: who, and the CSRF secret its forms carry."""

    principal: Principal
    csrf: str


class Sessions:
    """Dashboard sessions in the store's own database (a table of the server's bookkeeping,
    created when the server starts, like its idempotency keys; not part of the store's schema)."""

    def __init__(self, store: Any, ttl_ms: int = SESSION_TTL_MS) -> None:
        self._store = store
        self.ttl_ms = ttl_ms
        self._opened = 0
        self._lock = threading.Lock()

    def create_table(self) -> None:
        _metadata.create_all(self._store._engine, checkfirst=True)

    def open(self, user_name: str, token_id: str) -> tuple[str, str]:
        """A new session: (the id for the cookie, its CSRF token). Only the id's hash is kept."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = _now_ms()
        row = {
            "id_hash": _digest(session_id),
            "user_name": user_name,
            "token_id": token_id,
            "csrf": csrf,
            "created_at": now,
            "expires_at": now + self.ttl_ms,
        }
        self._store._write(lambda c: c.execute(sa.insert(_sessions).values(**row)))
        self._prune_now_and_then(now)
        return session_id, csrf

    def get(self, session_id: str) -> Session | None:
        """The session ``session_id`` opened, while it is unexpired, its user enabled and its
        token unrevoked; None otherwise."""
        if not session_id or len(session_id) > 100:
            return None
        digest = _digest(session_id)
        row = self._store._read(
            lambda c: c.execute(sa.select(_sessions).where(_sessions.c.id_hash == digest)).first()
        )
        if row is None or row.expires_at <= _now_ms():
            return None
        try:
            user = self._store.get_user(row.user_name)
            token = self._store.get_token(row.token_id)
        except NotFound:
            return None
        if user.disabled or not token.active or token.user != user.name:
            return None
        return Session(principal_of(user), row.csrf)

    def close(self, session_id: str) -> None:
        digest = _digest(session_id)
        self._store._write(
            lambda c: c.execute(sa.delete(_sessions).where(_sessions.c.id_hash == digest))
        )

    def _prune_now_and_then(self, now: int) -> None:
        with self._lock:
            self._opened += 1
            if self._opened % 100 != 1:
                return
        self._store._write(
            lambda c: c.execute(sa.delete(_sessions).where(_sessions.c.expires_at <= now))
        )


# -- the request's principal -------------------------------------------------------------------


def principal(request: Request) -> Principal:
    """Who the request acts for (set by :class:`AuthGate`)."""
    found: Principal = request.scope["state"]["principal"]
    return found


def csrf_token(request: Request) -> str:
    """The CSRF token the request's forms must carry."""
    return str(request.scope["state"]["csrf"])


def login_required(request: Request) -> bool:
    """Whether this dashboard has sessions (served by the server with users)."""
    return bool(request.scope["state"].get("session"))


def require(request: Request, role: Role, model: str | None = None) -> Principal:
    """The request's principal when it has at least ``role`` (on ``model``); 403 otherwise."""
    from starlette.exceptions import HTTPException

    who = principal(request)
    if who.role < role:
        raise HTTPException(
            403,
            f"user {who.name!r} has role {who.role.value!r}; this needs {role.value!r} or higher",
        )
    if model is not None and not who.may(role, model):
        raise HTTPException(403, f"user {who.name!r} may not act on model {model!r}")
    return who


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST, after checking its CSRF token (403 without it or with a
    wrong one). A header ``X-CSRF-Token`` counts as well as the field."""
    from starlette.exceptions import HTTPException

    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"a form is at most {MAX_FORM_BYTES} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not hmac.compare_digest(given.encode(), csrf_token(request).encode()):
        raise HTTPException(
            403,
            "missing or wrong CSRF token: reload the page and submit its form again",
        )
    return form


# -- the gate ------------------------------------------------------------------------------------


def _host_of(value: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit("//" + value.strip().lower())
        return (parts.hostname or "", parts.port)
    except ValueError:
        return None


def _cross_origin(headers: Mapping[str, str], scheme: str) -> str | None:
    """Why a state-changing request looks sent by another site's page, or None."""
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"refused a request from another site (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = _host_of(headers.get("host", ""))
    try:
        parts = urlsplit(origin.strip())
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        theirs = (parts.hostname, parts.port or default)
    except ValueError:
        theirs = None
    if host is not None and theirs == (host[0], host[1] or _DEFAULT_PORTS.get(scheme)):
        return None
    return f"refused a request from another origin (Origin: {origin[:100]!r})"


class AuthGate:
    """Pure ASGI middleware, outermost in the dashboard: fixes ``url_for`` under a mount, refuses
    cross-site writes and rebound hosts, and resolves the request's principal (or sends the
    browser to the login page)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request

        dashboard = scope["app"]
        # Mounted (``modelloop server``): links are built by this app's router under its prefix.
        scope = {
            **scope,
            "router": dashboard.router,
            "app_root_path": scope.get("root_path", ""),
            "state": dict(scope.get("state") or {}),
        }
        request = Request(scope, receive)
        refusal = await run_in_threadpool(self._resolve, request, dashboard.state)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _resolve(self, request: Request, app_state: Any) -> Response | None:
        from starlette.responses import RedirectResponse

        from modelloop.ui._app import render

        state = request.scope["state"]
        method = request.method.upper()
        headers = request.headers
        sessions: Sessions | None = app_state.sessions
        local = sessions is None or not app_state.client.store.has_users()
        if local:
            host = _host_of(headers.get("host", ""))
            if host is None or host[0] not in _LOOPBACK_NAMES:
                # without login, only this machine's own names (no DNS rebinding)
                return _refused(
                    request, 403, "without login this dashboard answers only loopback host names"
                )
        if method not in _SAFE_METHODS:
            why = _cross_origin(headers, request.url.scheme)
            if why:
                return _refused(request, 403, why)
        route = _route_path(request)
        if route.startswith("/static/") and method in _SAFE_METHODS:
            state.update(principal=None, csrf="", session=False)  # the package's files: public
            return None
        if local:
            state["principal"] = app_state.local_principal
            state["csrf"] = app_state.local_csrf
            state["session"] = False
            return None
        state["session"] = True
        session = sessions.get(request.cookies.get(COOKIE, "")) if sessions else None
        if session is not None:
            state["principal"] = session.principal
            state["csrf"] = session.csrf
            return _out_of_scope(request, route, session.principal)
        state["principal"] = None
        state["csrf"] = request.cookies.get(LOGIN_COOKIE, "")
        if route == "/login":
            return None
        if method in _SAFE_METHODS:
            target = request.url_for("login").include_query_params(next=_relative(request))
            return RedirectResponse(str(target), status_code=303)
        state["csrf"] = ""
        return render(
            request,
            "error.html",
            {"title": "HTTP 403", "message": "log in first (your session ended)"},
            403,
        )


def _out_of_scope(request: Request, route: str, who: Principal) -> Response | None:
    """A 403 page for ``/models/{name}/...`` when ``who`` is limited to other models."""
    from urllib.parse import unquote

    from modelloop.ui._app import render

    parts = route.split("/")
    if who.models is None or len(parts) < 3 or parts[1] != "models" or not parts[2]:
        return None
    name = unquote(parts[2])
    if name in who.models:
        return None
    message = f"user {who.name!r} may not see model {name!r}"
    return render(request, "error.html", {"title": "HTTP 403", "message": message}, 403)


def _route_path(request: Request) -> str:
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _relative(request: Request) -> str:
    url = request.url
    return url.path + (f"?{url.query}" if url.query else "")


def _refused(request: Request, status: int, message: str) -> Response:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(f"{status}: {message}", status_code=status)


# -- login and logout --------------------------------------------------------------------------


def _safe_next(request: Request, target: str | None) -> str:
    """Where to go after logging in: a path of this dashboard, never another site."""
    home = str(request.url_for("experiments").path)
    root = request.scope.get("root_path", "")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    if root and not (target == root or target.startswith(root + "/")):
        return home
    return target


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") or "/"


def login_page(request: Request) -> Response:
    """The login form: paste an API token. A fresh random value goes into an HttpOnly cookie
    and the form, so a login can only be posted by this page."""
    from starlette.responses import RedirectResponse

    if not login_required(request) or principal(request) is not None:
        return RedirectResponse(_safe_next(request, request.query_params.get("next")), 303)
    return _login_form(request, request.query_params.get("next", ""), "", 200)


def _login_form(request: Request, target: str, message: str, status: int) -> Response:
    from modelloop.ui._app import render

    value = secrets.token_urlsafe(24)
    request.scope["state"]["csrf"] = value
    response = render(
        request,
        "login.html",
        {"title": "Log in", "next": target, "message": message},
        status_code=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=3600,
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def login_submit(request: Request) -> Response:
    """Check the pasted token as the API does; on success open a session and set its cookie."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    if not login_required(request):
        return RedirectResponse(str(request.url_for("experiments")), 303)
    if not request.scope["state"]["csrf"]:
        return _login_form(request, "", "your login form expired: paste the token again", 403)
    form = await read_form(request)
    target = form.get("next", "")
    token = form.get("token", "").strip()
    store = request.app.state.client.store
    user = await run_in_threadpool(store.authenticate, token) if token else None
    parsed = parse_token(token) if token else None
    if user is None or parsed is None:
        return _login_form(request, target, "invalid, revoked or disabled token", 401)
    sessions: Sessions = request.app.state.sessions
    session_id, _ = await run_in_threadpool(sessions.open, user.name, parsed.token_id)
    response = RedirectResponse(_safe_next(request, target), status_code=303)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=sessions.ttl_ms // 1000,
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
    return response


async def logout(request: Request) -> Response:
    """End the session (its row is deleted, so the cookie is worthless even if kept)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse

    await read_form(request)
    sessions: Sessions | None = request.app.state.sessions
    session_id = request.cookies.get(COOKIE)
    if sessions is not None and session_id:
        await run_in_threadpool(sessions.close, session_id)
    target = request.url_for("login") if login_required(request) else request.url_for("experiments")
    response = RedirectResponse(str(target), status_code=303)
    response.delete_cookie(
        COOKIE,
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response
