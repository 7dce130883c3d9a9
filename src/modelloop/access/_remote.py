"""A small HTTP client for the users, tokens and audit routes of ``modelloop server``.

It has the same methods as the store (``create_user``, ``list_tokens``, ...), so the CLI works
the same against a database URL and against a server. Errors come back as our exception tree,
from the status code; no message ever holds the token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import EllipsisType, MappingProxyType
from typing import Any

from modelloop.access._records import TokenInfo, User
from modelloop.access._roles import Role
from modelloop.exceptions import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelloopError,
    NotFound,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
)
from modelloop.store._http._codec import API_PREFIX
from modelloop.store._records import AuditEvent

__all__ = ["API_PREFIX", "AccessClient"]

_BY_STATUS: dict[int, type[ModelloopError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
}


def _user(d: Mapping[str, Any]) -> User:
    models = d.get("models")
    return User(
        name=d["name"],
        role=Role(d["role"]),
        models=None if models is None else tuple(models),
        created_at=int(d["created_at"]),
        disabled=bool(d["disabled"]),
    )


def _token(d: Mapping[str, Any]) -> TokenInfo:
    return TokenInfo(
        token_id=d["token_id"],
        user=d["user"],
        description=d["description"],
        created_at=int(d["created_at"]),
        revoked_at=d.get("revoked_at"),
        last_used_at=d.get("last_used_at"),
    )


def _event(d: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        event_id=int(d["event_id"]),
        timestamp=int(d["timestamp"]),
        actor=d["actor"],
        action=d["action"],
        entity_type=d["entity_type"],
        entity_id=d["entity_id"],
        before=None if d.get("before") is None else MappingProxyType(d["before"]),
        after=None if d.get("after") is None else MappingProxyType(d["after"]),
        route=d.get("route"),
        model=d.get("model"),
    )


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, Mapping):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, str):
                return value
            if value is not None:  # FastAPI validation errors: a list of problems
                return str(value)[:500]
    return f"HTTP {response.status_code}"


class AccessClient:
    """Users, tokens and audit of a server at ``base_url`` (``https://host:port``), as the
    user whose ``token`` is given. Certificates are verified (``verify``: True, False or a CA
    bundle path). Thread-safe; close it (or use it as a context manager) when done."""

    def __init__(
        self, base_url: str, token: str | None, *, verify: bool | str = True, timeout: float = 30
    ) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"server URL must start with http:// or https://, got {base_url!r}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._base = base_url.rstrip("/")
        self._has_token = bool(token)
        self._http = httpx.Client(
            base_url=self._base + API_PREFIX, headers=headers, verify=verify, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"AccessClient({self._base!r})"

    def __enter__(self) -> AccessClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ServiceUnavailable(
                f"cannot reach the modelloop server at {self._base}: {type(e).__name__}: {e}"
            ) from None
        if response.status_code >= 400:
            error = _BY_STATUS.get(response.status_code)
            message = _detail(response)
            if error is None:
                error = (
                    ServiceUnavailable if response.status_code in (502, 503, 504) else StoreError
                )
                message = f"the server answered {response.status_code}: {message}"
            if response.status_code == 401 and not self._has_token:
                message += " (set MODELLOOP_TOKEN to a token from 'modelloop tokens create')"
            raise error(message)
        return response.json()

    # -- the store's methods -----------------------------------------------------------------

    def whoami(self, *, as_token: str | None = None) -> dict[str, Any]:
        """The caller's name, role and models, as the server sees them (``as_token``: the
        holder of that token instead; the model server checks tokens this way)."""
        headers = None if as_token is None else {"Authorization": f"Bearer {as_token}"}
        return dict(self._call("GET", "/whoami", headers=headers))

    def create_user(
        self, name: str, role: Role | str, *, models: Sequence[str] | None = None
    ) -> User:
        body = {"name": name, "role": Role.parse(role).value, "models": _list(models)}
        return _user(self._call("POST", "/users", json=body))

    def get_user(self, name: str) -> User:
        return _user(self._call("GET", f"/users/{_segment(name)}"))

    def list_users(self) -> list[User]:
        return [_user(d) for d in self._call("GET", "/users")]

    def update_user(
        self,
        name: str,
        *,
        role: Role | str | None = None,
        models: Sequence[str] | EllipsisType | None = ...,
        disabled: bool | None = None,
    ) -> User:
        body: dict[str, Any] = {}
        if role is not None:
            body["role"] = Role.parse(role).value
        if models is not ...:
            body["models"] = _list(models)  # type: ignore[arg-type]
        if disabled is not None:
            body["disabled"] = disabled
        return _user(self._call("PATCH", f"/users/{_segment(name)}", json=body))

    def create_token(self, user: str, description: str = "") -> tuple[TokenInfo, str]:
        body = self._call("POST", "/tokens", json={"user": user, "description": description})
        return _token(body["info"]), str(body["token"])

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        params = {} if user is None else {"user": user}
        return [_token(d) for d in self._call("GET", "/tokens", params=params)]

    def revoke_token(self, token_id: str) -> TokenInfo:
        return _token(self._call("POST", f"/tokens/{_segment(token_id)}/revoke"))

    def list_audit_events(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        model: str | None = None,
        since: int | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (
            ("entity_type", entity_type),
            ("entity_id", entity_id),
            ("user", actor),
            ("model", model),
            ("since", since),
        ):
            if value is not None:
                params[key] = value
        return [_event(d) for d in self._call("GET", "/audit", params=params)]


def _list(models: Sequence[str] | None) -> list[str] | None:
    return None if models is None else list(models)


def _segment(value: str) -> str:
    """``value`` as one path segment: names and ids are checked by the server, but a ``/`` or
    ``..`` must never change which route is called."""
    from urllib.parse import quote

    if not isinstance(value, str) or not value or value in (".", ".."):
        raise InvalidInput(f"invalid name {value!r}")
    return quote(value, safe="")
