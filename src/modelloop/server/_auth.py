"""Authentication, authorisation and auditing for the routes of the control-plane server.

Every route declares the least role it needs with ``Depends(require(Role.X))``; routes that
name a model call :func:`check_model`; every write calls :func:`audit`. The store comes from
``request.app.state.store`` (a ``SqlStore``).

While the store has no user, the server is in open mode: every request acts as ``local`` with
role admin (the server refuses non-loopback binds then). From the first user on, every route
needs ``Authorization: Bearer <token>``, on loopback too: 401 for a missing, malformed, unknown,
revoked or disabled token (with ``WWW-Authenticate``), 403 for a role too low or a model out of
scope. No error body echoes the token.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from modelloop.access import Role
from modelloop.access._principal import OPEN_MODE_PRINCIPAL, Principal, principal_of

__all__ = [
    "OPEN_MODE_PRINCIPAL",
    "Principal",
    "audit",
    "audit_event",
    "check_model",
    "forbidden",
    "principal_of",
    "require",
    "route_of",
]

_REALM = 'Bearer realm="modelloop"'
# Declares the bearer scheme in the OpenAPI document; the header is parsed by ``_credentials``.
_bearer = HTTPBearer(auto_error=False, description="An API token: modelloop tokens create")


def forbidden(detail: str) -> HTTPException:
    """A 403 with the ``insufficient_scope`` challenge (RFC 6750)."""
    return HTTPException(
        status_code=403,
        detail=detail,
        headers={"WWW-Authenticate": _REALM + ', error="insufficient_scope"'},
    )


def _unauthorized(reason: str, *, invalid: bool) -> HTTPException:
    challenge = _REALM + (', error="invalid_token"' if invalid else "")
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": challenge})


def _credentials(request: Request) -> str:
    """The bearer token of the request, or a 401 saying what is wrong with the header."""
    values = request.headers.getlist("authorization")
    if not values:
        raise _unauthorized("missing bearer token", invalid=False)
    if len(values) > 1:
        raise _unauthorized("more than one Authorization header", invalid=True)
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization must be 'Bearer <token>'", invalid=True)
    return token.strip()


class UsersProbe:
    """Whether the store has users yet, asked on every request while it has none (a user
    added by another process, ``modelloop users add``, ends open mode with the next request).

    On a SQLite file the probe keeps a connection of its own in autocommit mode and asks with
    one statement: no transaction and no pool, a few microseconds, so the server asks it on
    the event loop (a reader is never blocked by writers in WAL mode). Elsewhere it asks the
    store, in a worker thread. Users are never deleted: once one is seen, the answer is kept.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0
        self.inline = store.dialect == "sqlite" and getattr(store, "_serial", None) is None

    def has_users(self) -> bool:
        store = self._store
        if store._users_seen or not self.inline:
            return bool(store.has_users())
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                self._conn = store._engine.raw_connection()
                self._pid = os.getpid()
            found = bool(self._conn.driver_connection.execute(_ANY_USER).fetchall())
        if found:
            store._users_seen = True
        return found

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


_ANY_USER = "SELECT 1 FROM users LIMIT 1"


def users_probe(request: Request) -> UsersProbe:
    """The app's :class:`UsersProbe` (made on first use)."""
    state = request.app.state
    probe: UsersProbe | None = getattr(state, "users_probe", None)
    if probe is None:
        probe = state.users_probe = UsersProbe(state.store)
    return probe


def _authenticate(request: Request) -> Principal:
    if not users_probe(request).has_users():
        return OPEN_MODE_PRINCIPAL
    user = request.app.state.store.authenticate(_credentials(request))
    if user is None:
        raise _unauthorized("invalid, revoked or disabled token", invalid=True)
    return principal_of(user)


@functools.cache
def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency giving the caller's :class:`Principal` when it has at least
    ``role``: ``principal: Principal = Depends(require(Role.EDITOR))``. The same role gives
    the same dependency, so FastAPI resolves it once per request.

    In open mode over SQLite the check is answered on the event loop (see
    :class:`UsersProbe`); a token is checked against the store in a worker thread."""
    role = Role.parse(role)

    async def dependency(
        request: Request,
        _declared: HTTPAuthorizationCredentials | None = Security(_bearer),  # noqa: B008
    ) -> Principal:
        probe = users_probe(request)
        if probe.inline and not probe._store._users_seen and not probe.has_users():
            principal = OPEN_MODE_PRINCIPAL
        else:
            principal = await run_in_threadpool(_authenticate, request)
        if not principal.may(role):
            raise forbidden(
                f"user {principal.name!r} has role {principal.role.value!r}; "
                f"this needs {role.value!r} or higher"
            )
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


def check_model(principal: Principal, model: str) -> None:
    """403 when ``principal`` is limited to other models than ``model``."""
    if principal.models is not None and model not in principal.models:
        raise forbidden(f"user {principal.name!r} may not act on model {model!r}")


def route_of(request: Request) -> str:
    """``METHOD /route/template`` of the request (the template, not the concrete path, so the
    log groups by route and never holds ids or a query string)."""
    path = request.scope.get("path") or request.url.path
    template = getattr(request.scope.get("route"), "path", None)
    if not template:
        return f"{request.method} {path}"
    return f"{request.method} {_full_template(path, template)}"


def _full_template(path: str, template: str) -> str:
    """``template`` with the prefixes it was included under, taken from the concrete ``path``.

    FastAPI keeps the route of an included router with its own path ("/users/{name}"); the
    prefixes ("/api/v1") are the leading segments of the concrete path that the template does
    not account for. A ``{...:path}`` parameter spans any number of segments: then the prefix
    ends where the template's fixed head first appears."""
    if path == template or (path.endswith(template) and "{" not in template):
        return path
    if ":path}" in template:
        head = template[: template.find("{")]
        at = path.find(head)
        return path[:at] + template if at > 0 else template
    segments = path.strip("/").split("/")
    own = template.strip("/").split("/") if template.strip("/") else []
    extra = len(segments) - len(own)
    if extra <= 0:
        return template
    return "/" + "/".join(segments[:extra] + own)


def audit(
    request: Request,
    principal: Principal,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """Record a change in the audit log with the authenticated user and the route (never a
    name the client supplied). Registry entity ids (``m``, ``m/3``, ``m@alias``) also file the
    event under their model."""
    event = audit_event(request, principal, action, entity_type, entity_id, before, after)
    request.app.state.store.add_audit_event(**event)


def audit_event(
    request: Request,
    principal: Principal,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of an audit event for a change made through ``request``: the authenticated
    user as the actor, and the route."""
    return {
        "actor": principal.name,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "before": before,
        "after": after,
        "route": route_of(request),
    }
