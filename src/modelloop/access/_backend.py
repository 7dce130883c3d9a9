"""One interface to users, tokens and audit, over a SQL store or over a server.

``open_access()`` chooses from ``MODELLOOP_STORE_URL``: ``http(s)://`` talks to the server's
routes with ``MODELLOOP_TOKEN``; anything else opens the SQL store directly and records changes
as the local user (``MODELLOOP_USER`` or the login name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Any, Protocol

from modelloop._config import is_server_url
from modelloop.access._records import TokenInfo, User
from modelloop.access._roles import Role
from modelloop.store._records import AuditEvent

__all__ = ["TOKEN_ENV", "AccessBackend", "LocalAccess", "is_server_url", "open_access"]

#: The token a client presents to a server.
TOKEN_ENV = "MODELLOOP_TOKEN"


class AccessBackend(Protocol):
    """What the CLI needs of users, tokens and audit."""

    def create_user(
        self, name: str, role: Role | str, *, models: Sequence[str] | None = None
    ) -> User: ...
    def get_user(self, name: str) -> User: ...
    def list_users(self) -> list[User]: ...
    def update_user(
        self,
        name: str,
        *,
        role: Role | str | None = None,
        models: Sequence[str] | EllipsisType | None = ...,
        disabled: bool | None = None,
    ) -> User: ...
    def create_token(self, user: str, description: str = "") -> tuple[TokenInfo, str]: ...
    def list_tokens(self, user: str | None = None) -> list[TokenInfo]: ...
    def revoke_token(self, token_id: str) -> TokenInfo: ...
    def list_audit_events(
        self,
        *,
        entity_type: str | None = None,
        entity_id: str | None = None,
        actor: str | None = None,
        model: str | None = None,
        since: int | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]: ...
    def close(self) -> None: ...


class LocalAccess:
    """:class:`AccessBackend` on a ``SqlStore``, recording changes as ``actor``."""

    def __init__(self, store: Any, actor: str) -> None:
        self.store = store
        self.actor = actor

    def create_user(
        self, name: str, role: Role | str, *, models: Sequence[str] | None = None
    ) -> User:
        return self.store.create_user(name, role, models=models, actor=self.actor)  # type: ignore[no-any-return]

    def get_user(self, name: str) -> User:
        return self.store.get_user(name)  # type: ignore[no-any-return]

    def list_users(self) -> list[User]:
        return self.store.list_users()  # type: ignore[no-any-return]

    def update_user(
        self,
        name: str,
        *,
        role: Role | str | None = None,
        models: Sequence[str] | EllipsisType | None = ...,
        disabled: bool | None = None,
    ) -> User:
        return self.store.update_user(  # type: ignore[no-any-return]
            name, role=role, models=models, disabled=disabled, actor=self.actor
        )

    def create_token(self, user: str, description: str = "") -> tuple[TokenInfo, str]:
        return self.store.create_token(user, description, actor=self.actor)  # type: ignore[no-any-return]

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        return self.store.list_tokens(user)  # type: ignore[no-any-return]

    def revoke_token(self, token_id: str) -> TokenInfo:
        return self.store.revoke_token(token_id, actor=self.actor)  # type: ignore[no-any-return]

    def list_audit_events(self, **filters: Any) -> list[AuditEvent]:
        return self.store.list_audit_events(**filters)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.store.close()


def open_access(environ: Mapping[str, str] = os.environ) -> AccessBackend:
    """The backend ``MODELLOOP_STORE_URL`` names (see the module docstring)."""
    url = environ.get("MODELLOOP_STORE_URL") or None
    if is_server_url(url):
        from modelloop.access._remote import AccessClient

        return AccessClient(str(url), environ.get(TOKEN_ENV) or None)
    from modelloop._config import Settings
    from modelloop.store._sql import SqlStore

    settings = Settings.from_env()
    return LocalAccess(SqlStore(settings.resolved_store_url), settings.user)
