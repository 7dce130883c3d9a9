"""Bearer-token auth of the model server: token loading, the bind check, ASGI middlewares.

Loopback stays open for local work; any other address needs tokens, or an explicit opt-out.
Tokens have a role: ``admin`` may call everything, ``predict`` everything but the admin routes.
Besides the tokens given to the server, the tokens of the users in the metadata store can be
accepted (a :data:`UserCheck`, see ``modelloop.access._serve``): one identity for the control
plane and the model server. A user's token is looked up on every request, so revocation and
disabling take effect at once; a user limited to some models reaches only those.
Without tokens, :class:`OpenModeGuard` keeps web pages out: a browser can reach a loopback
port from any site (and through DNS rebinding), so open mode answers only loopback ``Host``
names and takes no state-changing request that a browser marks as coming from another origin.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from modelloop.exceptions import InvalidInput

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TOKENS_ENV",
    "BearerAuthMiddleware",
    "Identity",
    "OpenModeGuard",
    "Token",
    "UserCheck",
    "check_bind",
    "is_loopback",
    "load_tokens",
]

logger = logging.getLogger(__name__)

#: Environment variable with comma-separated tokens (``TOKEN`` or ``TOKEN:role``).
TOKENS_ENV = "MODELLOOP_SERVE_TOKENS"
#: Shortest token accepted, in characters.
MIN_TOKEN_LENGTH = 16
_ROLES = ("predict", "admin")
# RFC 6750 token68: what may follow "Bearer " in an Authorization header.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Token:
    """A bearer token and its role; the value never shows in ``repr``."""

    value: str = field(repr=False)
    role: Literal["predict", "admin"] = "admin"


@dataclass(frozen=True)
class Identity:
    """A user of the metadata store, as the model server sees them: their name, the serving
    role their role gives (deployer and admin: ``admin``; viewer and editor: ``predict``) and
    the models they are limited to (None: every model)."""

    name: str
    role: Literal["predict", "admin"]
    models: frozenset[str] | None = None


#: Checks a presented token against the user store: the user's identity, or None. Blocking
#: (a database read); the middleware calls it on a worker thread.
UserCheck = Callable[[str], "Identity | None"]


def _parse(spec: str, where: str) -> Token:
    value, sep, role = spec.strip().rpartition(":")
    if not sep:
        value, role = role, "admin"
    if role not in _ROLES:
        raise InvalidInput(f"{where}: unknown role {role!r}; use TOKEN or TOKEN:predict|admin")
    if len(value) < MIN_TOKEN_LENGTH:
        raise InvalidInput(
            f"{where}: token has {len(value)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not _TOKEN68.fullmatch(value):
        raise InvalidInput(f"{where}: a token may hold only letters, digits and - . _ ~ + / =")
    return Token(value, role)  # type: ignore[arg-type]


def load_tokens(
    *,
    tokens: Sequence[str] = (),
    token_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> list[Token]:
    """Tokens from ``--token`` values, a token file and ``$MODELLOOP_SERVE_TOKENS``, merged.

    Each is ``TOKEN`` (role admin) or ``TOKEN:role``. The file holds one per line; blank lines
    and ``#`` comments are skipped. The variable is comma-separated. Error messages name where
    a bad token came from, never the token itself.
    """
    found: list[tuple[str, str]] = [(t, f"--token #{i + 1}") for i, t in enumerate(tokens)]
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read token file {path}: {exc}") from exc
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if line:
                found.append((line, f"token file {path}, line {n}"))
    for i, item in enumerate(environ.get(TOKENS_ENV, "").split(",")):
        if item.strip():
            found.append((item, f"${TOKENS_ENV} item {i + 1}"))
    result: dict[str, Token] = {}
    for spec, where in found:
        token = _parse(spec, where)
        seen = result.get(token.value)
        if seen is not None and seen.role != token.role:
            raise InvalidInput(f"{where}: the same token is also given with role {seen.role!r}")
        result[token.value] = token
    return list(result.values())


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1; False for 0.0.0.0, :: and anything else."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_bind(
    host: str, tokens: Sequence[Token], *, allow_unauthenticated: bool, users: bool = False
) -> None:
    """Refuse to serve a non-loopback ``host`` without tokens (given ones or ``users``' ones)
    unless explicitly allowed."""
    if tokens or users or is_loopback(host):
        return
    if allow_unauthenticated:
        logger.warning("serving on %s without authentication (--allow-unauthenticated)", host)
        return
    raise InvalidInput(
        f"refusing to serve on {host!r} without authentication: anyone who can reach it could "
        "predict and change routing. Give tokens with --token, --token-file or "
        f"${TOKENS_ENV}, bind to 127.0.0.1, or pass --allow-unauthenticated to serve it open"
    )


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


# The paths that name one model: /v1/models/{name}..., /v2/models/{name}...,
# /v1/admin/models/{name}... (matched on the normalised, lower-cased path).
_MODEL_PATH = re.compile(r"/v[12]/(?:admin/)?models/([^/]+)")


class BearerAuthMiddleware:
    """Pure ASGI middleware: every HTTP request and websocket needs a valid bearer token.

    The presented token is hashed and compared with ``hmac.compare_digest`` against every
    configured token (no early exit), so timing tells neither which token nor how much of it
    matched. A ``predict`` token on ``admin_prefix`` gets 403. Lifespan passes through.

    With ``users``, a token that is none of ``tokens`` is checked against the user store (on a
    worker thread). A user limited to some models gets 403 on a path naming another model, and
    on the paths that act on every model (the admin routes without a model, ``/v1/models``)
    unless ``served`` models are all theirs.
    """

    def __init__(
        self,
        app: ASGIApp,
        tokens: Sequence[Token],
        *,
        admin_prefix: str = "/v1/admin",
        users: UserCheck | None = None,
        served: Sequence[str] = (),
    ) -> None:
        self.app = app
        self._tokens = [(_digest(t.value.encode()), t.role) for t in tokens]
        self._admin = "/" + admin_prefix.strip("/").lower()
        self._users = users
        self._served = frozenset(s.lower() for s in served)

    def _credentials(self, scope: Scope) -> tuple[bytes | None, str]:
        """The presented token, or None and the reason."""
        values = [v for k, v in scope.get("headers") or () if k.lower() == b"authorization"]
        if not values:
            return None, "missing bearer token"
        if len(values) > 1:
            return None, "more than one Authorization header"
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return None, "Authorization must be 'Bearer <token>'"
        return credentials.strip(), ""

    def _static_role(self, credentials: bytes) -> str | None:
        presented = _digest(credentials)
        role = None
        for digest, token_role in self._tokens:
            if hmac.compare_digest(presented, digest):
                role = token_role
        return role

    async def _identity(self, scope: Scope) -> tuple[Identity | None, int, str]:
        """Who is calling, or None with the status and reason of the refusal."""
        credentials, reason = self._credentials(scope)
        if credentials is None:
            return None, 401, reason
        role = self._static_role(credentials)
        if role is not None:
            return Identity("token", role), 200, ""  # type: ignore[arg-type]
        if self._users is not None:
            import anyio.to_thread

            try:
                token = credentials.decode("ascii")
            except UnicodeDecodeError:
                return None, 401, "invalid bearer token"
            try:
                found = await anyio.to_thread.run_sync(self._users, token)
            except Exception as e:  # the store is down: refuse, never let through
                logger.error("could not check a user token: %s", type(e).__name__)
                return None, 503, "the user store could not be reached to check the token"
            if found is not None:
                return found, 200, ""
        return None, 401, "invalid bearer token"

    def _normalised(self, scope: Scope) -> str:
        # Decide on a normalised path, so '//v1/admin' or '/v1/x/../admin' cannot slip by.
        parts: list[str] = []
        for part in str(scope.get("path", "")).lower().split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)

    def _is_admin(self, path: str) -> bool:
        return path == self._admin or path.startswith(self._admin + "/")

    def _out_of_scope(self, identity: Identity, path: str, admin: bool) -> str | None:
        """Why a user limited to some models may not call ``path``, or None."""
        if identity.models is None:
            return None
        allowed = {m.lower() for m in identity.models}
        m = _MODEL_PATH.match(path)
        if m:
            if m.group(1) in allowed:
                return None
            return f"user {identity.name!r} may not use model {m.group(1)!r}"
        if (admin or path == "/v1/models") and not self._served <= allowed:
            return f"user {identity.name!r} may not act on every served model"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        identity, status, reason = await self._identity(scope)
        if identity is not None:
            path = self._normalised(scope)
            admin = self._is_admin(path)
            if admin and identity.role != "admin":
                status, reason = 403, f"a {identity.role!r} token may not call {scope.get('path')}"
            else:
                refusal = self._out_of_scope(identity, path, admin)
                if refusal is None:
                    await self.app(scope, receive, send)
                    return
                status, reason = 403, refusal
        if status == 503:
            await _refuse(scope, receive, send, 503, reason, [(b"retry-after", b"5")])
            return
        if status == 401:
            challenge = 'Bearer realm="modelloop"'
            if reason == "invalid bearer token":
                challenge += ', error="invalid_token"'
        else:
            challenge = 'Bearer realm="modelloop", error="insufficient_scope"'
        await _refuse(
            scope, receive, send, status, reason, [(b"www-authenticate", challenge.encode())]
        )


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    reason: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer ``{"error": reason}`` with ``status``; a websocket is closed with 1008 instead,
    its reason cut short (a close frame holds at most 123 bytes of it)."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        return
    body = json.dumps({"error": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Methods a browser may send cross-site without asking first, and that change nothing here.
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# How a refused state-changing request can get in.
_HOW = (
    "without tokens this server takes changes only from its own pages and from clients that "
    "send no Origin (curl, SDKs); give tokens (--token) to let others in"
)
# Every request asks whether its Host and the server address are loopback, and they are almost
# always the same few names: parsing them as IP addresses each time is most of the guard's cost.
_loopback_name = functools.lru_cache(maxsize=256)(is_loopback)


def _split_host(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a ``Host`` value (``name``, ``name:port``, ``[v6]:port``), or None."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    if not name or (port and not (port.isascii() and port.isdigit() and len(port) <= 5)):
        return None
    return name, int(port) if port else None


def _header(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers") or () if k.lower() == name]


class OpenModeGuard:
    """Pure ASGI middleware for a server without tokens: what a web page cannot do.

    - A request that arrives on a loopback address must name a loopback host (``localhost``,
      ``127.x.x.x``, ``[::1]``, any port) in ``Host``: a DNS-rebound name gets 403.
    - A state-changing request (any method but GET, HEAD, OPTIONS) gets 403 when the browser
      says it comes from another origin: ``Sec-Fetch-Site`` ``cross-site`` or ``same-site``, or
      an ``Origin`` whose host and port are not the ``Host`` it was sent to. Clients that send
      no ``Origin`` (curl, SDKs, tritonclient) are not affected.

    Requiring a JSON content type on the routes that take one (see ``read_body``) completes it:
    a page can send no such request to another origin without the server's consent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _refusal(self, scope: Scope) -> str | None:
        hosts = _header(scope, b"host")
        if len(hosts) > 1:
            return "more than one Host header"
        host = _split_host(hosts[0]) if hosts else None
        if hosts and host is None:
            return f"invalid Host header {hosts[0][:100]!r}"
        server = scope.get("server")
        on_loopback = not server or _loopback_name(str(server[0]))
        if on_loopback and host is not None and not _loopback_name(host[0]):
            return (
                f"Host {hosts[0][:100]!r} is not a loopback name: without tokens this server "
                "answers only requests addressed to localhost, 127.0.0.1 or [::1] (a web page "
                "could otherwise reach it by DNS rebinding); give tokens (--token) to serve "
                "other names"
            )
        if scope["type"] == "http" and scope.get("method", "GET") in _SAFE_METHODS:
            return None
        for site in _header(scope, b"sec-fetch-site"):
            if site.strip().lower() in ("cross-site", "same-site"):
                return f"refused a request from another site (Sec-Fetch-Site: {site}): {_HOW}"
        origins = _header(scope, b"origin")
        if not origins:
            return None
        origin = origins[0].strip()
        if len(origins) == 1 and host is not None and origin.lower() != "null":
            default = None
            try:
                parts = urlsplit(origin)
                default = _DEFAULT_PORTS.get(parts.scheme.lower())
                theirs = (parts.hostname, parts.port or default)
            except ValueError:  # a port that is not a number
                theirs = None
            if theirs is not None and theirs == (host[0], host[1] or default):
                return None
        return f"refused a request from another origin (Origin: {origin[:100]!r}): {_HOW}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = self._refusal(scope)
        if reason is None:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, receive, send, 403, reason)
