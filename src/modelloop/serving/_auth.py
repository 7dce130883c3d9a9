"""Bearer-token auth of the model server: token loading, the bind check, an ASGI middleware.

Loopback stays open for local work; any other address needs tokens, or an explicit opt-out.
Tokens have a role: ``admin`` may call everything, ``predict`` everything but the admin routes.
"""

from __future__ import annotations

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

from modelloop.exceptions import InvalidInput

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TOKENS_ENV",
    "BearerAuthMiddleware",
    "Token",
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


def check_bind(host: str, tokens: Sequence[Token], *, allow_unauthenticated: bool) -> None:
    """Refuse to serve a non-loopback ``host`` without tokens unless explicitly allowed."""
    if tokens or is_loopback(host):
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


class BearerAuthMiddleware:
    """Pure ASGI middleware: every HTTP request and websocket needs a valid bearer token.

    The presented token is hashed and compared with ``hmac.compare_digest`` against every
    configured token (no early exit), so timing tells neither which token nor how much of it
    matched. A ``predict`` token on ``admin_prefix`` gets 403. Lifespan passes through.
    """

    def __init__(
        self, app: ASGIApp, tokens: Sequence[Token], *, admin_prefix: str = "/v1/admin"
    ) -> None:
        self.app = app
        self._tokens = [(_digest(t.value.encode()), t.role) for t in tokens]
        self._admin = "/" + admin_prefix.strip("/").lower()

    def _role(self, scope: Scope) -> tuple[str | None, str]:
        """The caller's role, or None and the reason."""
        values = [v for k, v in scope.get("headers") or () if k.lower() == b"authorization"]
        if not values:
            return None, "missing bearer token"
        if len(values) > 1:
            return None, "more than one Authorization header"
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return None, "Authorization must be 'Bearer <token>'"
        presented = _digest(credentials.strip())
        role = None
        for digest, token_role in self._tokens:
            if hmac.compare_digest(presented, digest):
                role = token_role
        return role, "" if role is not None else "invalid bearer token"

    def _is_admin(self, scope: Scope) -> bool:
        # Decide on a normalised path, so '//v1/admin' or '/v1/x/../admin' cannot slip by.
        parts: list[str] = []
        for part in str(scope.get("path", "")).lower().split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        path = "/" + "/".join(parts)
        return path == self._admin or path.startswith(self._admin + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        role, reason = self._role(scope)
        status = 401
        if role is not None:
            if role == "admin" or not self._is_admin(scope):
                await self.app(scope, receive, send)
                return
            status, reason = 403, f"a {role!r} token may not call {scope.get('path')}"
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        if status == 401:
            challenge = 'Bearer realm="modelloop"'
            if reason == "invalid bearer token":
                challenge += ', error="invalid_token"'
        else:
            challenge = 'Bearer realm="modelloop", error="insufficient_scope"'
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
