"""Who is acting on a request: the identity the control-plane server and the dashboard check
roles and model scopes against."""

from __future__ import annotations

from dataclasses import dataclass

from modelloop.access._records import User
from modelloop.access._roles import Role

__all__ = ["OPEN_MODE_PRINCIPAL", "Principal", "principal_of"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's name, role and model scope (None: every model)."""

    name: str
    role: Role
    models: frozenset[str] | None

    def may(self, role: Role, model: str | None = None) -> bool:
        """Whether this principal has at least ``role`` (on ``model``, when one is named)."""
        if self.role < role:
            return False
        return model is None or self.models is None or model in self.models


#: The principal of every request while the store has no user.
OPEN_MODE_PRINCIPAL = Principal("local", Role.ADMIN, None)


def principal_of(user: User) -> Principal:
    """The principal acting for ``user``."""
    return Principal(user.name, user.role, None if user.models is None else frozenset(user.models))
