"""TEMPORARY open-mode stand-in for the access helper's ``_auth.py`` (same API); replaced by
``git merge access``. Every request is the local admin; nothing is audited here."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fastapi import HTTPException, Request

__all__ = ["Principal", "Role", "audit", "check_model", "require"]


class Role(enum.StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    DEPLOYER = "deployer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank >= other.rank


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    models: frozenset[str] | None

    def may(self, role: Role, model: str | None = None) -> bool:
        if not self.role >= role:
            return False
        return model is None or self.models is None or model in self.models


def require(role: Role) -> Callable[..., Principal]:
    def dependency(request: Request) -> Principal:
        return Principal("local", Role.ADMIN, None)

    return dependency


def check_model(principal: Principal, model: str) -> None:
    if principal.models is not None and model not in principal.models:
        raise HTTPException(status_code=403, detail="forbidden")


def audit(
    request: Request,
    principal: Principal,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, object] | None = None,
    after: Mapping[str, object] | None = None,
) -> None:
    return None
