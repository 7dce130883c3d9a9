"""Routes of users, tokens and the audit log (mounted by the server under ``/api/v1``).

Managing users and tokens needs role admin; anyone may ask who they are, list and revoke their
own tokens. The audit log is read whole by admins; other roles read it one model at a time,
for a model in their scope. Every change is audited in the same transaction as the change,
with the authenticated user and the route. The audit log has no route that changes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from modelloop.access import Role
from modelloop.exceptions import ModelloopError
from modelloop.server._auth import Principal, check_model, forbidden, require, route_of
from modelloop.server._common import store_of

__all__ = [
    "AuditEventOut",
    "TokenCreate",
    "TokenCreated",
    "TokenOut",
    "UserCreate",
    "UserOut",
    "UserUpdate",
    "WhoAmI",
    "router",
]

router = APIRouter(tags=["access"])

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]

_Out = TypeVar("_Out", bound=BaseModel)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_In):
    name: str = Field(max_length=128)
    role: Role
    models: list[str] | None = Field(default=None, max_length=1000)


class UserUpdate(_In):
    """Fields left out are kept; ``models: null`` gives every model."""

    role: Role | None = None
    models: list[str] | None = Field(default=None, max_length=1000)
    disabled: bool | None = None


class UserOut(BaseModel):
    name: str
    role: Role
    models: list[str] | None
    created_at: int
    disabled: bool


class TokenCreate(_In):
    user: str = Field(max_length=128)
    description: str = Field(default="", max_length=1000)


class TokenOut(BaseModel):
    token_id: str
    user: str
    description: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


class TokenCreated(BaseModel):
    token: str = Field(description="The token; shown this once, never again")
    info: TokenOut


class WhoAmI(BaseModel):
    name: str
    role: Role
    models: list[str] | None


class AuditEventOut(BaseModel):
    event_id: int
    timestamp: int
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    route: str | None
    model: str | None


def _out(model: type[_Out], record: Any) -> _Out:
    """A record of the store (a user, a token, an audit event) as its response model: each
    field the model names, read from the record's attribute of that name."""
    return model.model_validate(record, from_attributes=True)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Our errors as their HTTP status, whatever exception handlers the app has."""
    try:
        yield
    except ModelloopError as e:
        raise HTTPException(status_code=e.http_status, detail=str(e)) from None


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Viewer) -> WhoAmI:
    """The caller's user name, role and model scope."""
    models = None if principal.models is None else sorted(principal.models)
    return WhoAmI(name=principal.name, role=principal.role, models=models)


@router.get("/users", response_model=list[UserOut])
def list_users(request: Request, principal: Admin) -> list[UserOut]:
    """Every user, disabled ones included."""
    with _errors():
        return [_out(UserOut, u) for u in store_of(request).list_users()]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(request: Request, body: UserCreate, principal: Admin) -> UserOut:
    """Add a user (409 if the name is taken)."""
    with _errors():
        user = store_of(request).create_user(
            body.name,
            body.role,
            models=body.models,
            actor=principal.name,
            route=route_of(request),
        )
    return _out(UserOut, user)


@router.get("/users/{name}", response_model=UserOut)
def get_user(request: Request, name: str, principal: Viewer) -> UserOut:
    """One user: any user for an admin, oneself for everyone else."""
    if name != principal.name and not principal.may(Role.ADMIN):
        raise forbidden("only an admin may read other users")
    with _errors():
        return _out(UserOut, store_of(request).get_user(name))


@router.patch("/users/{name}", response_model=UserOut)
def update_user(request: Request, name: str, body: UserUpdate, principal: Admin) -> UserOut:
    """Change a user's role, model scope or disabled flag; fields left out are kept."""
    changes: dict[str, Any] = {}
    if "role" in body.model_fields_set and body.role is not None:
        changes["role"] = body.role
    if "models" in body.model_fields_set:
        changes["models"] = body.models
    if "disabled" in body.model_fields_set and body.disabled is not None:
        changes["disabled"] = body.disabled
    if name == principal.name and (
        changes.get("disabled") or changes.get("role", "admin") != "admin"
    ):
        raise HTTPException(
            status_code=409,
            detail="an admin cannot disable or demote themselves (ask another admin)",
        )
    with _errors():
        user = store_of(request).update_user(
            name, actor=principal.name, route=route_of(request), **changes
        )
    return _out(UserOut, user)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(
    request: Request,
    principal: Viewer,
    user: Annotated[str | None, Query(max_length=128)] = None,
) -> list[TokenOut]:
    """Tokens (never their secrets): an admin's choice of user or all; one's own otherwise."""
    if not principal.may(Role.ADMIN):
        if user is not None and user != principal.name:
            raise forbidden("only an admin may list others' tokens")
        user = principal.name
    with _errors():
        return [_out(TokenOut, t) for t in store_of(request).list_tokens(user)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(request: Request, body: TokenCreate, principal: Admin) -> TokenCreated:
    """A new token for an enabled user; the answer holds it once."""
    with _errors():
        info, plaintext = store_of(request).create_token(
            body.user, body.description, actor=principal.name, route=route_of(request)
        )
    return TokenCreated(token=plaintext, info=_out(TokenOut, info))


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_token(request: Request, token_id: str, principal: Viewer) -> TokenOut:
    """Revoke a token (an admin any, others their own); it fails from the next request on."""
    store = store_of(request)
    with _errors():
        if not principal.may(Role.ADMIN) and store.get_token(token_id).user != principal.name:
            raise forbidden("only an admin may revoke others' tokens")
        return _out(
            TokenOut, store.revoke_token(token_id, actor=principal.name, route=route_of(request))
        )


@router.get("/audit", response_model=list[AuditEventOut])
def list_audit(
    request: Request,
    principal: Viewer,
    model: Annotated[str | None, Query(max_length=256)] = None,
    user: Annotated[str | None, Query(max_length=256)] = None,
    entity_type: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=1024)] = None,
    since: Annotated[int | None, Query(ge=0, description="ms since the epoch")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AuditEventOut]:
    """The newest ``limit`` audit events, oldest first. Non-admins must name a model."""
    if not principal.may(Role.ADMIN):
        if model is None:
            raise forbidden(
                f"user {principal.name!r} has role {principal.role.value!r}; the whole audit "
                "log needs 'admin' or higher: name a model of yours"
            )
        check_model(principal, model)
    with _errors():
        events = store_of(request).list_audit_events(
            entity_type=entity_type,
            entity_id=entity_id,
            actor=user,
            model=model,
            since=since,
            limit=limit,
        )
    return [_out(AuditEventOut, e) for e in events]
